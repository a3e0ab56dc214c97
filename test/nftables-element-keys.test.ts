// Element keys as the kernel reports them to kproxy's nf_tables event
// listener, decoded back into the record's text (modes/nftables/element-keys.ts):
// every keyed map and set of kproxy's table, IPv4 and IPv6, declared and
// filled by real nft in a network namespace the test creates; and what
// cannot be decoded is said so.
import test from 'ava';
import { netnsExec } from '../lib/exec.ts';
import { listenerCommand, nftEventsAddon, nftEventsAddonPath, parseListenerEvent } from '../modes/nft-events.ts';
import { decodeKey } from '../modes/nftables/element-keys.ts';
import { familySyntax, staticSets, tableName } from '../modes/nftables/layout.ts';
import { Transaction } from '../modes/nftables/objects.ts';
import { createNetns, deleteNetns, requireKernelPrerequisites } from './helpers/netns.ts';

/** A key and value for each keyed set of kproxy's table. */
function sample(set: string, fam: 4 | 6): { key: string; value?: string } {
  const ip = fam === 4 ? '10.96.3.250' : '2001:db8::a:1';
  const ep = fam === 4 ? '10.244.1.2 . 8080' : 'fd00::2 . 8080';
  if (/^(service-ips|no-endpoint-services|affinity-record)$/.test(set)) return { key: `${ip} . udp . 53`, value: 'goto c' };
  if (/^(service-nodeports|no-endpoint-nodeports|affinity-record-nodeports)$/.test(set)) return { key: 'sctp . 30001', value: 'goto c' };
  if (/^endpoints-/.test(set)) return { key: `${ip} . 443 . 7`, value: ep };
  if (/^nodeport-endpoints-/.test(set)) return { key: '31999 . 12', value: ep };
  if (set === 'hairpin') return { key: `${ip} . ${ip}` };
  throw new Error(`no sample for ${set}`);
}

test('every keyed set of kproxy\'s table: the raw keys of real kernel events decode to the record\'s text', async (t) => {
  requireKernelPrerequisites([{ tool: 'ip', pkg: 'iproute2' }, { tool: 'nft', pkg: 'nftables' }]);
  const addon = nftEventsAddon();
  if (addon instanceof Error) throw new Error(`${addon.message}: install g++, make and python3, then npm ci`);
  const ns = await createNetns('kpxkey');
  t.teardown(() => deleteNetns(ns));
  const exec = netnsExec(ns);
  const lines: string[] = [];
  const cmd = listenerCommand(nftEventsAddonPath());
  const child = exec.stream!(cmd.tool, cmd.args, { onLine: (l) => lines.push(l) });
  t.teardown(() => child.stop());
  const until = async (done: () => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  };
  await until(() => lines.length > 0);

  const wanted = new Map<string, string>();
  for (const fam of [4, 6] as const) {
    const f = familySyntax(fam);
    const tx = new Transaction();
    const w = { family: f.nft, table: tableName } as const;
    tx.add({ verb: 'add', object: 'table', ...w });
    tx.add({ verb: 'add', object: 'chain', ...w, name: 'c' });
    for (const s of staticSets(f)) tx.add({ verb: 'add', object: s.kind, ...w, name: s.name, spec: s.spec });
    for (const s of staticSets(f)) {
      const e = sample(s.name, fam);
      tx.add({ verb: 'add', object: 'element', ...w, set: s.name, elements: [e] });
      wanted.set(`${f.nft} ${s.name}`, e.key);
    }
    if (tx.error) throw tx.error;
    await exec('/usr/sbin/nft', ['-f', '-'], tx.toString());
  }
  await until(() => lines.filter((l) => l.startsWith('# new generation')).length >= 2);
  const got = new Map<string, string | undefined>();
  for (const l of lines) {
    const e = parseListenerEvent(l);
    if (e?.object !== 'element') continue;
    t.is(e.keys?.length, 1, l);
    got.set(`${e.family} ${e.name}`, decodeKey(familySyntax(e.family === 'ip' ? 4 : 6), e.name, e.keys![0]));
  }
  t.deepEqual(Object.fromEntries(got), Object.fromEntries(wanted));
  t.is(wanted.size, 2 * staticSets(familySyntax(4)).length);
});

test('keys that are not one of kproxy\'s keyed sets, or do not fit its type, are not decoded', (t) => {
  const f4 = familySyntax(4);
  t.is(decodeKey(f4, 'service-ips', '0a60000a0600000000500000'), '10.96.0.10 . tcp . 80');
  t.is(decodeKey(f4, 'service-ips', '0a60000a06000000005000'), undefined, 'too short');
  t.is(decodeKey(f4, 'service-ips', '0a60000a0100000000500000'), undefined, 'not a protocol kproxy uses (icmp)');
  t.is(decodeKey(f4, 'aff-ABCDEFGH-10.1.1.1/80', '0a010101'), undefined, 'a dynamic set');
  t.is(decodeKey(f4, 'service-ips', '!0a000000'), undefined, 'an interval end');
  t.is(decodeKey(f4, 'service-ips', '*'), undefined, 'no key');
  t.is(decodeKey(familySyntax(6), 'hairpin', '0'.repeat(64)), ':: . ::');
});
