// Runs every benchmark in bench/ one after the other, passing the same
// arguments (e.g. `npm run bench -- --quick` for the small CI sizes).
// Each benchmark prints its own side-by-side table against its peer.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const benches = ['iptables-scale.ts', 'nftables-scale.ts', 'datapath.ts', 'dns-cache.ts', 'pipeline-latency.ts', 'soak.ts', 'repair.ts', 'userspace.ts', 'ipvs-uml-costs.ts'];
const args = process.argv.slice(2);
const only = process.env.KPROXY_BENCH?.split(',');

let failed = 0;
for (const bench of benches) {
  if (only && !only.some((o) => bench.startsWith(o))) continue;
  console.log(`\n=== ${bench} ${args.join(' ')}`);
  const started = Date.now();
  const r = spawnSync(process.execPath, [join(here, bench), ...args], { stdio: 'inherit' });
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (r.status !== 0) {
    failed++;
    console.log(`=== ${bench} FAILED (exit ${r.status ?? r.signal}) after ${secs} s`);
  } else {
    console.log(`=== ${bench} done in ${secs} s`);
  }
}
process.exit(failed ? 1 : 0);
