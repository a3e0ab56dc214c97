// Partial syncs, restarts, failures, drift and cleanup, against the fake
// kernel through the backend's real code path.
import test from 'ava';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { FakeKernel } from '../modes/iptables/fake-kernel.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, type Changes, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { ep, nodeState, svc } from './helpers/state.ts';
import { nodeIP, options } from './fixtures/services.ts';
import { syncBackend } from '../modes/sync.ts';

// This file's Services use kube-proxy's test addresses (pods in 10.180.0.0/16).
const opts = options({ families: [4, 6], clusterCIDRs: ['10.180.0.0/16', 'fd00:10:180::/64'] });

function backend(fake: FakeKernel): IptablesBackend {
  return new IptablesBackend({ ...opts, exec: fake.exec }, silentLogger());
}

function partial(...keys: string[]): Changes {
  return { full: false, services: new Set(keys), staleUdpEndpoints: [], staleUdpServiceIPs: [] };
}

function web(i: number, endpoints: number, extra: Partial<ServicePortState> = {}): ServicePortState {
  const eps = Array.from({ length: endpoints }, (_, j) => ep(`10.180.${i}.${j + 1}`, 8080));
  return svc({ name: `ns/web${i}:http`, clusterIP: `172.30.${i >> 8}.${i & 255}`, port: 80, clusterEndpoints: eps, ...extra });
}

/** Strips the common indentation of a template literal (and its first/last empty lines). */
function dedent(text: string): string {
  const lines = text.replace(/^\n/, '').replace(/\n\s*$/, '').split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => l.match(/^ */)![0].length));
  return `${lines.map((l) => l.slice(indent)).join('\n')}\n`;
}

function restores(fake: FakeKernel): string[] {
  return fake.log.filter((l) => /restore$/.test(l.tool) && l.tool.includes('tables')).map((l) => l.input);
}

test('one endpoint change writes only that Service chain', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = backend(fake);
  const services = Array.from({ length: 50 }, (_, i) => web(i + 1, 3));
  const s1 = nodeState(services);
  t.true((await syncBackend(b, s1, fullChanges(s1))).ok);
  const changed = web(7, 4);
  const s2 = nodeState(services.map((s) => (s.key === changed.key ? changed : s)));
  fake.log.length = 0;
  const r = await syncBackend(b, s2, partial(changed.key));
  t.true(r.ok);
  t.false(r.full);
  const batches = restores(fake);
  t.is(batches.length, 1, 'one restore, for the family that changed');
  t.is(batches[0], dedent(`
    *nat
    :KUBE-SVC-27ZAC4SFLEKBO4KM - [0:0]
    -A KUBE-SVC-27ZAC4SFLEKBO4KM ! -s 10.180.0.0/16 -d 172.30.0.7/32 -p tcp -m comment --comment "ns/web7:http cluster IP" -m tcp --dport 80 -j MARK --set-xmark 0x4000/0x4000
    -A KUBE-SVC-27ZAC4SFLEKBO4KM -p tcp -m comment --comment "ns/web7:http -> 10.180.7.1:8080" -m statistic --mode random --probability 0.2500000000 -j DNAT --to-destination 10.180.7.1:8080
    -A KUBE-SVC-27ZAC4SFLEKBO4KM -p tcp -m comment --comment "ns/web7:http -> 10.180.7.2:8080" -m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 10.180.7.2:8080
    -A KUBE-SVC-27ZAC4SFLEKBO4KM -p tcp -m comment --comment "ns/web7:http -> 10.180.7.3:8080" -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 10.180.7.3:8080
    -A KUBE-SVC-27ZAC4SFLEKBO4KM -p tcp -m comment --comment "ns/web7:http -> 10.180.7.4:8080" -j DNAT --to-destination 10.180.7.4:8080
    COMMIT
  `));
  const ipset = fake.log.filter((l) => l.tool === 'ipset');
  t.is(ipset.length, 1);
  t.is(ipset[0].input, 'add KUBE-LOOP-BACK 10.180.7.4,tcp:8080,10.180.7.4\n');
  t.is(r.size, 9, '8 restore lines and 1 ipset line');
});

test('an unchanged key in Changes sends nothing to the kernel', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = backend(fake);
  const s = nodeState([web(1, 2)]);
  await syncBackend(b, s, fullChanges(s));
  fake.log.length = 0;
  const r = await syncBackend(b, s, partial(web(1, 2).key));
  t.true(r.ok);
  t.is(restores(fake).length, 0);
  t.is(r.size, 0);
});

// A small deterministic generator of Service changes.
function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
}

function randomService(i: number, r: () => number): ServicePortState {
  const n = Math.floor(r() * 4);
  const v6 = i % 5 === 0;
  const eps = Array.from({ length: n }, (_, j) => v6 ? ep(`fd00:10:180::${i}:${j + 1}`, 80, { isLocal: j === 0 }) : ep(`10.180.${i}.${j + 1}`, 80, { isLocal: j === 0 }));
  const etpLocal = r() < 0.3;
  const hasNodePort = r() < 0.4;
  return svc({
    name: `ns${i % 3}/svc${i}:p`,
    clusterIP: v6 ? `fd00:172:30::${i}` : `172.30.0.${i}`,
    port: 80,
    protocol: r() < 0.2 ? 'UDP' : 'TCP',
    nodePort: hasNodePort ? 30000 + i : 0,
    externalIPs: r() < 0.3 ? [v6 ? `fd00:99::${i}` : `192.168.99.${i}`] : [],
    loadBalancerIPs: r() < 0.2 ? [v6 ? `fd00:5::${i}` : `5.6.7.${i}`] : [],
    loadBalancerSourceRanges: r() < 0.5 ? [v6 ? '2001:db8::/32' : '203.0.113.0/24'] : [],
    affinityTimeoutSeconds: r() < 0.25 ? 300 : 0,
    externalPolicyLocal: etpLocal && hasNodePort,
    healthCheckNodePort: etpLocal && hasNodePort ? 31000 + i : 0,
    clusterEndpoints: eps,
    localEndpoints: etpLocal && hasNodePort ? eps.filter((e) => e.isLocal) : [],
  });
}

for (const seed of [1, 2, 3, 4]) {
  test(`a sequence of partial syncs ends exactly where one full sync of the final state does (seed ${seed})`, async (t) => {
    const r = rng(seed);
    const fake = new FakeKernel([nodeIP]);
    const b = backend(fake);
    const current = new Map<number, ServicePortState>();
    for (let i = 1; i <= 30; i++) current.set(i, randomService(i, r));
    const state = (): NodeState => nodeState([...current.values()]);
    const s0 = state();
    t.true((await syncBackend(b, s0, fullChanges(s0))).ok);
    for (let step = 0; step < 40; step++) {
      const keys: string[] = [];
      for (let c = 0; c < 1 + Math.floor(r() * 3); c++) {
        const i = 1 + Math.floor(r() * 40);
        const old = current.get(i);
        if (old) keys.push(old.key);
        if (old && r() < 0.25) current.delete(i);
        else {
          const s = randomService(i, r);
          current.set(i, s);
          keys.push(s.key);
        }
      }
      const res = await syncBackend(b, state(), partial(...keys));
      if (!res.ok) return t.fail(`step ${step}: ${res.error?.message}`);
      t.false(res.full);
    }
    const fresh = new FakeKernel([nodeIP]);
    const final = state();
    t.true((await syncBackend(backend(fresh), final, fullChanges(final))).ok);
    t.is(fake.dump(4), fresh.dump(4));
    t.is(fake.dump(6), fresh.dump(6));
    t.deepEqual([...fake.sets.keys()].sort(), [...fresh.sets.keys()].sort());
    for (const [name, set] of fresh.sets) t.deepEqual([...fake.sets.get(name)!.entries].sort(), [...set.entries].sort(), name);
  });
}

test('a failed restore makes the next sync full, and it converges', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = backend(fake);
  const s1 = nodeState([web(1, 2), web(2, 2)]);
  await syncBackend(b, s1, fullChanges(s1));
  const s2 = nodeState([web(1, 3), web(2, 2)]);
  fake.failNextRestore = true;
  const bad = await syncBackend(b, s2, partial(web(1, 3).key));
  t.false(bad.ok);
  t.truthy(bad.error);
  const s3 = nodeState([web(1, 3), web(2, 1)]);
  const next = await syncBackend(b, s3, partial(web(2, 1).key));
  t.true(next.ok);
  t.true(next.full, 'the sync after a failure is full');
  const fresh = new FakeKernel([nodeIP]);
  await syncBackend(backend(fresh), s3, fullChanges(s3));
  t.is(fake.dump(4), fresh.dump(4));
});

test('restart: a new instance adopts the previous rules without flushing first, and removes stale chains', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const before = nodeState([web(1, 2), web(2, 2, { affinityTimeoutSeconds: 60 }), web(3, 1, { nodePort: 30003 })]);
  await syncBackend(backend(fake), before, fullChanges(before));
  t.regex(fake.dump(4), /KUBE-SEP-/);
  fake.log.length = 0;
  const after = nodeState([web(1, 2), web(4, 2)]);
  const r = await syncBackend(backend(fake), after, fullChanges(after));
  t.true(r.ok);
  // One restore per family carries everything: no separate flush went first.
  const batches = restores(fake);
  t.is(batches.length, 2);
  t.regex(batches[0], /^\*mangle\n/);
  t.notRegex(batches[0], /^-F|^-X KUBE-SERVICES/m);
  t.regex(batches[0], /^-X KUBE-SEP-/m);
  const fresh = new FakeKernel([nodeIP]);
  await syncBackend(backend(fresh), after, fullChanges(after));
  t.is(fake.dump(4), fresh.dump(4), 'stale chains gone, built-in jumps not duplicated');
});

test('checkDrift(): nothing while canaries and jumps are there; a missing jump is put back alone, a flushed canary means a full sync', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = backend(fake);
  const s = nodeState([web(1, 2)]);
  await syncBackend(b, s, fullChanges(s));
  t.deepEqual(await b.checkDrift(), { damage: [] });
  const good = fake.dump(4);

  // Someone deletes one jump from a built-in chain: found, and repaired by a partial sync of one line.
  await fake.exec('iptables', ['-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
  const found = await b.checkDrift();
  t.deepEqual(found.damage.map((d) => `${d.what} ${d.object}`), ['jump ip nat PREROUTING: jumps into kproxy\'s chains']);
  t.is(found.full, undefined);
  const before = restores(fake).length;
  const r = await syncBackend(b, s, partial());
  t.true(r.ok);
  t.false(r.full);
  t.deepEqual(r.repairs?.map((d) => d.what), ['jump']);
  t.is(restores(fake).slice(before).join(''), '*nat\n-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n');
  t.is(fake.dump(4), good);
  t.deepEqual(await b.checkDrift(), { damage: [] }, 'nothing left to repair');

  // Someone flushes the mangle table: its canary's rule is gone, so a full sync.
  await fake.exec('iptables-restore', ['--noflush'], '*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n');
  const flushed = await b.checkDrift();
  t.regex(flushed.full ?? '', /canary chain of the ip mangle table/);
  const r2 = await syncBackend(b, s, partial());
  t.true(r2.full);
  t.deepEqual(r2.repairs?.map((d) => d.what), ['full']);
  t.is(fake.dump(4), good);
});

test('a repair rewrites the damaged chains alone, together with a change to other Services', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = backend(fake);
  const s1 = nodeState([web(1, 2), web(2, 3), web(3, 1, { nodePort: 30003 })]);
  await syncBackend(b, s1, fullChanges(s1));
  // Someone flushes web1's Service chain and KUBE-SERVICES, and deletes the nat canary's rule.
  const owner = [...fake.dump(4, 'nat').matchAll(/^-A (KUBE-SVC-\S+) .*ns\/web1:http/gm)][0][1];
  await fake.exec('iptables-restore', ['--noflush'], `*nat\n:${owner} - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n`);
  // Found by the nf_tables events in the real kernel; queued the same way here.
  const report = (b as unknown as { queue(f: unknown[]): { damage: { what: string; object: string }[] } }).queue([
    { key: `chain 4 nat ${owner}`, damage: { what: 'chain', object: `ip nat ${owner}`, family: 4, kind: 'chain', table: 'nat', chain: owner } },
    { key: 'chain 4 nat KUBE-SERVICES', damage: { what: 'chain', object: 'ip nat KUBE-SERVICES', family: 4, kind: 'chain', table: 'nat', chain: 'KUBE-SERVICES' } },
    { key: 'chain 4 nat KUBE-PROXY-CANARY', damage: { what: 'canary', object: 'ip nat KUBE-PROXY-CANARY', family: 4, kind: 'chain', table: 'nat', chain: 'KUBE-PROXY-CANARY' } },
  ]);
  t.is(report.damage.length, 3);
  // Meanwhile web2 gains an endpoint and web4 appears.
  const s2 = nodeState([web(1, 2), web(2, 4), web(3, 1, { nodePort: 30003 }), web(4, 1)]);
  const before = restores(fake).length;
  const r = await syncBackend(b, s2, partial(web(2, 4).key, web(4, 1).key));
  t.true(r.ok, r.error?.message);
  t.false(r.full);
  t.deepEqual(r.repairs?.map((d) => d.what).sort(), ['canary', 'chain', 'chain']);
  const batch = restores(fake).slice(before).join('');
  t.notRegex(batch, /^-A KUBE-SVC-\S+ .*ns\/web3/m, 'web3 is not rewritten');
  t.regex(batch, /^-A KUBE-SVC-\S+ .*ns\/web1/m, 'web1 is');
  const fresh = new FakeKernel([nodeIP]);
  await syncBackend(backend(fresh), s2, fullChanges(s2));
  t.is(fake.dump(4), fresh.dump(4), 'the same tables a full sync writes');
  // The repair is settled: the next plan repairs nothing.
  const again = await syncBackend(b, s2, partial());
  t.deepEqual(again.repairs, []);
});

test('cleanup removes every kproxy chain, jump and set, and nothing else', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const foreign = '*filter\n:KUBE-FIREWALL - [0:0]\n-A KUBE-FIREWALL -s 1.2.3.4/32 -j DROP\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n*nat\n-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE\nCOMMIT\n';
  await fake.exec('iptables-restore', ['--noflush'], foreign);
  const empty = fake.dump(4);
  const b = backend(fake);
  const s = nodeState([web(1, 2, { nodePort: 30001, affinityTimeoutSeconds: 10 }), web(2, 0, { hasEndpoints: false })]);
  await syncBackend(b, s, fullChanges(s));
  t.not(fake.dump(4), empty);
  await b.cleanup();
  t.is(fake.dump(4), empty);
  t.notRegex(fake.dump(6), /KUBE-/);
  t.is(fake.sets.size, 0);
  // A sync after cleanup starts from scratch and works.
  t.true((await syncBackend(b, s, partial())).ok);
});

test('ruleCounts follow partial syncs', async (t) => {
  const fake = new FakeKernel([nodeIP]);
  const b = backend(fake);
  const s1 = nodeState([web(1, 2), web(2, 3)]);
  const r1 = await syncBackend(b, s1, fullChanges(s1));
  const s2 = nodeState([web(1, 2)]);
  const r2 = await syncBackend(b, s2, partial(web(2, 3).key));
  const natRules = (dump: string): number => dump.split('\n').filter((l) => /^-A KUBE-/.test(l)).length;
  t.is(r1.owned.nat, natRules(fake.dump(4, 'nat')) + 5); // the service's chains were 5 rules bigger
  t.is(r2.owned.nat, natRules(fake.dump(4, 'nat')));
});
