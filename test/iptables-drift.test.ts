// Finding what someone else changed in kproxy's iptables chains: nf_tables
// events mapped to chains and jumps, and the iptables-legacy check that
// digests one save per table against the record, driven through the
// backend against the fake kernel (which prints saves as iptables-save does).
import test from 'ava';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { damageFromEvents, digestSave } from '../modes/iptables/drift.ts';
import { FakeKernel } from '../modes/iptables/fake-kernel.ts';
import { listenerEvent, parseEvent, type NftGeneration } from '../modes/nft-monitor.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, type Changes, type ServicePortState } from '../proxy/model.ts';
import { syncBackend } from '../modes/sync.ts';
import { ep, nodeState, svc } from './helpers/state.ts';
import { nodeIP, options } from './fixtures/services.ts';

// Every test of this file drives the legacy variant (its check reads saves).
process.env.KPROXY_IPTABLES_VARIANT = 'legacy';

const opts = options({ families: [4], clusterCIDRs: ['10.180.0.0/16'] });
const partial = (...keys: string[]): Changes => ({ full: false, services: new Set(keys), staleUdpEndpoints: [], staleUdpServiceIPs: [] });

function web(i: number, endpoints: number, extra: Partial<ServicePortState> = {}): ServicePortState {
  const eps = Array.from({ length: endpoints }, (_, j) => ep(`10.180.${i}.${j + 1}`, 8080));
  return svc({ name: `ns/web${i}:http`, clusterIP: `172.30.0.${i}`, port: 80, clusterEndpoints: eps, ...extra });
}

function gen(...lines: string[]): NftGeneration {
  return { id: 9, pid: 4321, comm: 'iptables', events: lines.map((l) => parseEvent(l)!) };
}

test('events: rules changed in kproxy\'s chains name the chain; deletions in built-in chains name the jumps to check; others are ignored', (t) => {
  const r = damageFromEvents(gen(
    'delete rule ip nat KUBE-SVC-ABC handle 5',
    'delete rule ip nat KUBE-SVC-ABC handle 6',
    'add rule ip filter KUBE-SERVICES ip daddr 1.2.3.4 counter accept',
    'delete rule ip nat PREROUTING handle 2',
    'add rule ip nat PREROUTING counter accept',
    'delete rule ip nat DOCKER handle 9',
    'delete rule ip mangle KUBE-PROXY-CANARY handle 3',
    'delete rule ip6 nat KUBE-SVC-ABC handle 5',
    'delete rule ip raw PREROUTING handle 1',
  ), [4]);
  t.deepEqual(r.findings.map((f) => `${f.damage.what} ${f.damage.object}`), [
    'chain ip nat KUBE-SVC-ABC', 'chain ip nat KUBE-SVC-ABC', 'chain ip filter KUBE-SERVICES',
    'jump ip nat PREROUTING: jumps into kproxy\'s chains', 'canary ip mangle KUBE-PROXY-CANARY',
  ]);
  t.is(r.full, undefined);
  t.regex(damageFromEvents(gen('delete table ip nat'), [4]).full ?? '', /delete table ip nat by iptables \(pid 4321\)/);
  t.deepEqual(damageFromEvents(gen('delete chain ip nat KUBE-SEP-XYZ'), [4]).findings.map((f) => f.key), ['chain 4 nat KUBE-SEP-XYZ']);
});

test('events from kproxy\'s listener (a count per run, no rule text) name the same chains and jumps', (t) => {
  const g = (...lines: string[]): NftGeneration => ({ id: 9, pid: 4321, comm: 'iptables', events: lines.map((l) => listenerEvent(l)!) });
  const r = damageFromEvents(g(
    'delete rule ip nat KUBE-SVC-ABC 2',
    'add rule ip filter KUBE-SERVICES 1',
    'delete rule ip nat PREROUTING 1',
    'add rule ip nat PREROUTING 1',
    'delete rule ip nat DOCKER 1',
    'delete rule ip mangle KUBE-PROXY-CANARY 1',
    'delete chain ip nat KUBE-SEP-XYZ 1',
  ), [4]);
  t.deepEqual(r.findings.map((f) => `${f.damage.what} ${f.damage.object}`), [
    'chain ip nat KUBE-SVC-ABC', 'chain ip filter KUBE-SERVICES', 'jump ip nat PREROUTING: jumps into kproxy\'s chains',
    'canary ip mangle KUBE-PROXY-CANARY', 'chain ip nat KUBE-SEP-XYZ',
  ]);
  t.regex(damageFromEvents(g('delete table ip nat 1'), [4]).full ?? '', /delete table ip nat by iptables \(pid 4321\)/);
});

test('legacy check: nothing after a sync; a flushed Service chain, an edited shared chain, a deleted jump and a flushed canary are found one by one and repaired alone', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = new IptablesBackend({ ...opts, exec: fake.exec }, silentLogger());
  const s = nodeState([web(1, 3), web(2, 2, { nodePort: 30002 }), web(3, 0, { hasEndpoints: false })]);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  t.deepEqual(await b.checkDrift(), { damage: [] });
  const good = fake.dump(4);
  const svc1 = /^-A (KUBE-SVC-\S+) .*ns\/web1:http -> /m.exec(good)![1];
  await fake.exec('iptables-legacy-restore', ['--noflush'], [
    '*nat', `:${svc1} - [0:0]`, ':KUBE-PROXY-CANARY - [0:0]', 'COMMIT',
    '*filter', '-A KUBE-SERVICES -d 172.30.0.99/32 -j ACCEPT', 'COMMIT', '',
  ].join('\n'));
  await fake.exec('iptables', ['-t', 'filter', '-D', 'OUTPUT', '-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
  const found = await b.checkDrift();
  t.deepEqual(found.damage.map((d) => `${d.what} ${d.object}`).sort(), [
    `canary ip nat KUBE-PROXY-CANARY`,
    `chain ip filter KUBE-SERVICES`,
    `chain ip nat ${svc1}`,
    'jump ip filter OUTPUT: jumps into kproxy\'s chains',
  ]);
  t.is(found.full, undefined);
  const r = await syncBackend(b, s, partial());
  t.true(r.ok, r.error?.message);
  t.false(r.full);
  t.is(r.repairs?.length, 4);
  // The same rules; the jump put back is first in OUTPUT (inserted at 1, as kube-proxy does).
  const sorted = (x: string): string[] => x.split('\n').sort();
  t.deepEqual(sorted(fake.dump(4)), sorted(good));
  t.deepEqual(await b.checkDrift(), { damage: [] });
});

test('legacy check: a chain whose kernel text never matches what kproxy wrote is rewritten three times, then left out', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const s = nodeState([web(1, 2)]);
  // A kernel that prints KUBE-MARK-MASQ differently from how kproxy wrote it.
  const save = fake.exec;
  const odd: typeof fake.exec = async (tool, args, input) => {
    const r = await save(tool, args, input);
    return tool.endsWith('-save') ? { ...r, stdout: r.stdout.replace('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000', '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000') } : r;
  };
  const b2 = new IptablesBackend({ ...opts, exec: odd }, silentLogger());
  t.true((await syncBackend(b2, s, fullChanges(s))).ok);
  for (let i = 0; i < 3; i++) {
    t.deepEqual((await b2.checkDrift()).damage.map((d) => d.object), ['ip nat KUBE-MARK-MASQ'], `round ${i + 1}`);
    t.true((await syncBackend(b2, s, partial())).ok);
  }
  t.deepEqual(await b2.checkDrift(), { damage: [] }, 'no longer compared');
});

test('a save is digested chain by chain with probabilities as kproxy writes them', (t) => {
  const text = [
    '# Generated by iptables-save', '*nat', ':PREROUTING ACCEPT [0:0]', ':KUBE-SVC-A - [0:0]', ':KUBE-EMPTY-X - [0:0]', ':KUBE-SEP-B - [0:0]',
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-SVC-A -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.0.0.1:80',
    '-A KUBE-SVC-A -j DNAT --to-destination 10.0.0.2:80', 'COMMIT', '',
  ].join('\n');
  const d = digestSave(text, 'nat');
  const want = digestSave(['*nat', ':KUBE-SVC-A - [0:0]', ':KUBE-SEP-B - [0:0]',
    '-A KUBE-SVC-A -m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 10.0.0.1:80',
    '-A KUBE-SVC-A -j DNAT --to-destination 10.0.0.2:80', 'COMMIT'].join('\n'), 'nat');
  t.deepEqual([...d.chains.keys()].sort(), ['KUBE-SEP-B', 'KUBE-SVC-A'], 'owned chains only, empty ones too');
  t.is(d.chains.get('KUBE-SVC-A'), want.chains.get('KUBE-SVC-A'));
  t.deepEqual([...d.builtinLines], ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']);
});
