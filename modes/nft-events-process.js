// The process kproxy runs to read nf_tables events (modes/nft-events.ts
// starts it, as a supervised child, in kproxy's network namespace):
//
//   node nft-events-process.js ADDON RCVBUF_BYTES MAX_KEYS
//
// It joins the kernel's nf_tables event group through the addon
// (modes/native/nft-events.c), prints "ready RCVBUF" once subscribed, then
// the addon writes one line per run of events to stdout until kproxy closes
// the pipe. Plain JavaScript, so no type stripper is loaded: the process
// holds Node.js itself and nothing else.
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';

// The name ps and the kernel show (15 bytes at most).
process.title = 'kproxy-nfevents';
const [addonPath, rcvbuf, maxKeys] = process.argv.slice(2);
if (!addonPath || !/^\d+$/.test(rcvbuf ?? '') || !/^\d+$/.test(maxKeys ?? '')) {
  process.stderr.write('usage: nft-events-process.js ADDON RCVBUF_BYTES MAX_KEYS\n');
  process.exit(2);
}
const addon = createRequire(import.meta.url)(addonPath);
const [fd, granted] = addon.listen(Number(rcvbuf));
writeSync(1, `ready ${granted}\n`);
const why = addon.pump(fd, 1, Number(maxKeys));
if (why !== 'output closed') process.stderr.write(`nf_tables event listener stopped: ${why}\n`);
process.exit(why === 'output closed' ? 0 : 1);
