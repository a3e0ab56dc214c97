// The nftables backend's control plane against the fake kernel: a sequence
// of incremental syncs must leave exactly the table one full sync of the
// final state builds, each incremental batch only touches what changed, and
// full syncs adopt, repair and clean up without touching anything else.
import test from 'ava';
import { NftablesBackend } from '../modes/nftables/backend.ts';
import { FakeNftKernel } from '../modes/nftables/fake-kernel.ts';
import { describe, remember, trace } from '../modes/nftables/tracer.ts';
import { fullChanges, type NodeState } from '../proxy/model.ts';
import { silentLogger } from '../lib/log.ts';
import { ep, nodeState, svc, withPort } from './helpers/state.ts';
import { allServices, byName, defaultOptions as options } from './fixtures/services.ts';
import { changesBetween, replace } from './fixtures/nftables/states.ts';
import { dedent, loaded } from './fixtures/nftables/golden.ts';
import { syncBackend } from '../modes/sync.ts';
import { fakeStream } from './helpers/fake-stream.ts';
import type { DriftReport } from '../modes/backend.ts';
import { loadConfig } from '../proxy/config.ts';

function setup() {
  const kernel = new FakeNftKernel();
  const backend = new NftablesBackend({ ...options, exec: kernel.exec }, silentLogger());
  return { kernel, backend };
}

/** Both tables, objects by name, elements sorted: equal when the states are. */
function view(k: FakeNftKernel): string {
  return k.dump('ip', 'kproxy', { sorted: true }) + k.dump('ip6', 'kproxy', { sorted: true });
}

function expected(state: NodeState): string {
  return view(loaded(state, options));
}

function without(state: NodeState, key: string): NodeState {
  const m = new Map(state.services);
  m.delete(key);
  return { ...state, services: m };
}

test('a sequence of incremental syncs ends in the table of one full sync', async (t) => {
  const { kernel, backend } = setup();
  let state = nodeState(allServices);
  const first = await syncBackend(backend, state, fullChanges(state));
  t.true(first.ok, first.error?.message);
  t.is(view(kernel), expected(state));

  const web = byName('shop/web:http');
  const sticky = byName('shop/sticky');
  const steps: [string, (s: NodeState) => NodeState][] = [
    ['an endpoint added (3 → 4)', (s) => replace(s, withPort(web, { clusterEndpoints: [...web.clusterEndpoints, ep('10.244.4.14', 8080)], allReachableEndpoints: [...web.clusterEndpoints, ep('10.244.4.14', 8080)] }))],
    ['an endpoint removed (4 → 2)', (s) => replace(s, withPort(web, { clusterEndpoints: web.clusterEndpoints.slice(0, 2), allReachableEndpoints: web.clusterEndpoints.slice(0, 2) }))],
    ['a Service loses every endpoint', (s) => replace(s, svc({ name: 'shop/np', clusterIP: '10.96.0.11', port: 80, nodePort: 30080 }))],
    ['a Service gets endpoints back', (s) => replace(s, svc({ name: 'shop/none', clusterIP: '10.96.0.19', port: 80, nodePort: 30083, externalIPs: ['203.0.113.19'], clusterEndpoints: [ep('10.244.2.12', 80)] }))],
    ['affinity switched off', (s) => replace(s, withPort(sticky, { affinityTimeoutSeconds: 0 }))],
    ['affinity on again with another timeout', (s) => replace(s, withPort(sticky, { affinityTimeoutSeconds: 60 }))],
    ['affinity timeout changed, endpoints kept', (s) => replace(s, withPort(sticky, { affinityTimeoutSeconds: 120 }))],
    ['affinity endpoint removed', (s) => replace(s, withPort(sticky, { affinityTimeoutSeconds: 120, clusterEndpoints: sticky.clusterEndpoints.slice(1), allReachableEndpoints: sticky.clusterEndpoints.slice(1) }))],
    ['externalTrafficPolicy Local switched off', (s) => replace(s, withPort(byName('shop/etp'), { externalPolicyLocal: false, localEndpoints: [] }))],
    ['LB source ranges removed', (s) => replace(s, withPort(byName('shop/lb:https'), { loadBalancerSourceRanges: [] }))],
    ['a Service deleted', (s) => without(s, byName('shop/multi:https').key)],
    ['a Service added sharing an endpoint IP (hairpin kept)', (s) => replace(s, svc({ name: 'shop/new', clusterIP: '10.96.0.99', port: 8080, clusterEndpoints: [ep('10.244.2.21', 9090)] }))],
    ['the ClusterIP of a Service changed', (s) => replace(s, withPort(byName('shop/ext'), { clusterIP: '10.96.0.112' }))],
    ['an IPv6 Service changed and an IPv4 one deleted at once', (s) => without(replace(s, withPort(byName('shop/v6'), { clusterEndpoints: [ep('fd00:244:9::1', 80)], allReachableEndpoints: [ep('fd00:244:9::1', 80)] })), byName('shop/sctp').key)],
    ['every Service deleted', () => nodeState([])],
    ['every Service back', () => nodeState(allServices)],
  ];
  for (const [what, change] of steps) {
    const next = change(state);
    const r = await syncBackend(backend, next, changesBetween(state, next));
    t.true(r.ok, `${what}: ${r.error?.message}`);
    t.false(r.full, what);
    t.is(view(kernel), expected(next), what);
    state = next;
  }
});

test('random change sequences always match a full sync', async (t) => {
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const { kernel, backend } = setup();
  let state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  const pool = allServices;
  for (let step = 0; step < 150; step++) {
    const base = pool[rand(pool.length)];
    let next: NodeState;
    const eps = Array.from({ length: rand(5) }, (_, i) => ep(`10.244.${2 + rand(3)}.${10 + rand(40)}`, 80 + i));
    switch (rand(5)) {
      case 0:
        next = without(state, base.key);
        break;
      case 1:
        next = replace(state, withPort(base, { clusterEndpoints: eps, allReachableEndpoints: eps, localEndpoints: [], hasEndpoints: eps.length > 0 || rand(2) === 0 }));
        break;
      case 2:
        next = replace(state, withPort(base, { affinityTimeoutSeconds: rand(2) ? 0 : 30 + rand(3) * 30 }));
        break;
      case 3: {
        const local = eps.slice(0, rand(3)).map((e) => ({ ...e, isLocal: true }));
        next = replace(state, withPort(base, { externalPolicyLocal: rand(2) === 0, internalPolicyLocal: rand(3) === 0, localEndpoints: local, allReachableEndpoints: [...base.clusterEndpoints, ...local] }));
        break;
      }
      default:
        next = replace(state, base);
    }
    // Now and then a periodic full sync on top of the loaded table.
    const r = await syncBackend(backend, next, rand(10) === 0 ? fullChanges(next) : changesBetween(state, next));
    t.true(r.ok, `step ${step}: ${r.error?.message}`);
    if (!r.ok) return;
    t.is(view(kernel), expected(next), `step ${step}`);
    state = next;
  }
});

test('one endpoint change is a batch of two element lines', async (t) => {
  const { backend, kernel } = setup();
  const web = byName('shop/web:http');
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  const moved = [web.clusterEndpoints[0], web.clusterEndpoints[1], ep('10.244.3.99', 8080)];
  const next = replace(state, withPort(web, { clusterEndpoints: moved, allReachableEndpoints: moved }));
  const r = await syncBackend(backend, next, changesBetween(state, next));
  t.true(r.ok);
  t.is(kernel.applied.at(-1), dedent(`
    delete element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 2 }
    add element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 2 : 10.244.3.99 . 8080 }
  `));
  t.is(r.size, 2);
  const held = (fam: string): number => {
    const tbl = kernel.table(fam, 'kproxy')!;
    let n = 0;
    for (const c of tbl.chains.values()) n += c.rules.length;
    for (const s of tbl.sets.values()) n += s.elements.size;
    return n;
  };
  t.deepEqual(r.owned, { 'ip kproxy': held('ip'), 'ip6 kproxy': held('ip6') }, 'the record counts what the kernel holds');
});

test('nothing changed: no nft call at all', async (t) => {
  const { backend, kernel } = setup();
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  const r = await syncBackend(backend, state, { full: false, services: new Set([allServices[0].key]), staleUdpEndpoints: [], staleUdpServiceIPs: [] });
  t.true(r.ok);
  t.is(r.size, 0);
  t.is(kernel.applied.length, 1);
});

test('the first sync adopts a table left by an earlier kproxy in one atomic batch', async (t) => {
  const { backend, kernel } = setup();
  kernel.apply('add table ip kproxy\nadd chain ip kproxy svc-OLD\nadd chain ip kproxy nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }\nadd rule ip kproxy nat-prerouting jump svc-OLD\n');
  const state = nodeState(allServices);
  const r = await syncBackend(backend, state, fullChanges(state));
  t.true(r.ok);
  t.is(kernel.applied.length, 2, 'one batch');
  t.regex(kernel.applied[1], /^add table ip kproxy\ndelete table ip kproxy\nadd table ip kproxy\n/);
  t.false(kernel.table('ip', 'kproxy')!.chains.has('svc-OLD'));
  t.is(view(kernel), expected(state));
});

test('checkDrift: a deleted kproxy table or chain is noticed from the chain listing alone, and the table rebuilt', async (t) => {
  const { backend, kernel } = setup();
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  t.deepEqual(await backend.checkDrift(), { damage: [] });
  kernel.apply('add table ip foreign\nadd chain ip foreign nat-prerouting\n');
  t.deepEqual(await backend.checkDrift(), { damage: [] }, 'a same-named chain in another table is not ours');
  kernel.apply('delete table ip kproxy\n');
  t.deepEqual(await backend.checkDrift(), { damage: [], full: 'table ip kproxy is gone' });
  const r = await syncBackend(backend, state, changesBetween(state, state));
  t.true(r.ok, r.error?.message);
  t.true(r.full);
  t.deepEqual(r.repairs, [{ what: 'full', object: 'table ip kproxy is gone' }]);
  t.regex(kernel.applied.at(-1)!, /^add table ip kproxy\ndelete table ip kproxy\nadd table ip kproxy\n/, 'rebuilt from nothing');
  t.is(view(kernel), expected(state));
  t.deepEqual(await backend.checkDrift(), { damage: [] });
  kernel.apply('flush chain ip kproxy nat-prerouting\ndelete chain ip kproxy nat-prerouting\n');
  t.regex((await backend.checkDrift()).full ?? '', /chain nat-prerouting of table ip kproxy gone/, 'base chain gone');
  const special = [...kernel.table('ip', 'kproxy')!.chains.keys()].find((c) => c.startsWith('rec-'))!;
  t.truthy(special);
});

test('a periodic full sync repairs flushed rules and keeps affinity; the chain listing alone does not see them', async (t) => {
  const { backend, kernel } = setup();
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  t.deepEqual(await backend.checkDrift(), { damage: [] });

  const pkt = { family: 4 as const, saddr: '10.244.1.5', daddr: '10.96.0.14', dport: 80, protocol: 'TCP' as const };
  const env = { localAddresses: ['192.168.0.2'] };
  remember(kernel, pkt, trace(kernel, pkt, env).find((o) => o.dnat === '10.244.2.51:80')!);

  kernel.apply('flush chain ip kproxy nat-prerouting\ndelete element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 1 }\n');
  // Reading rules would make nft fetch every map element (seconds at scale):
  // checkDrift() looks at chain declarations only; nf_tables events see contents.
  t.deepEqual(await backend.checkDrift(), { damage: [] }, 'rules flushed inside existing chains are left to the event watch');
  const r = await syncBackend(backend, state, fullChanges(state));
  t.true(r.ok, r.error?.message);
  t.regex(kernel.applied.at(-1)!, /^add table ip kproxy\nflush table ip kproxy\n/, 'with a record, a full sync flushes instead of deleting');
  t.deepEqual(await backend.checkDrift(), { damage: [] });
  t.deepEqual(describe(trace(kernel, pkt, env)), ['10.244.2.51:80'], 'affinity survived the full sync');
  t.deepEqual(describe(trace(kernel, { ...pkt, daddr: '10.96.0.10' }, env)), ['10.244.1.11:8080', '10.244.2.12:8080', '10.244.3.13:8080']);
});

test('a periodic full sync removes objects of Services gone since the last one', async (t) => {
  const { backend, kernel } = setup();
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  const next = nodeState(allServices.filter((s) => s.name !== 'shop/sticky' && s.name !== 'shop/web:http'));
  const r = await syncBackend(backend, next, fullChanges(next));
  t.true(r.ok, r.error?.message);
  t.is(view(kernel), expected(next));
});

test('a periodic full sync re-creates an affinity set whose timeout changed', async (t) => {
  const { backend, kernel } = setup();
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  const next = replace(state, withPort(byName('shop/sticky'), { affinityTimeoutSeconds: 60 }));
  const r = await syncBackend(backend, next, fullChanges(next));
  t.true(r.ok, r.error?.message);
  t.regex(kernel.applied.at(-1)!, /delete set ip kproxy aff-OYG37ED3-10\.244\.2\.51\/80\n/);
  t.is(view(kernel), expected(next));
});

test('a failed batch is reported and the next sync is a full one', async (t) => {
  const { backend, kernel } = setup();
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  kernel.apply('delete table ip kproxy\n'); // someone removed it behind kproxy's back
  const next = without(state, allServices[0].key);
  const bad = await syncBackend(backend, next, changesBetween(state, next));
  t.false(bad.ok);
  t.regex(String(bad.error?.message), /No such file or directory/);
  const good = await syncBackend(backend, next, changesBetween(next, next));
  t.true(good.ok);
  t.true(good.full, 'after a failure kproxy does not trust its record');
  t.is(view(kernel), expected(next));
});

test('cleanup removes only kproxy tables, and is fine when there are none', async (t) => {
  const { backend, kernel } = setup();
  kernel.apply('add table ip other\nadd chain ip other keep\n');
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  t.deepEqual(kernel.tableNames().sort(), ['ip kproxy', 'ip other', 'ip6 kproxy']);
  await backend.cleanup();
  t.deepEqual(kernel.tableNames(), ['ip other']);
  await backend.cleanup();
  t.deepEqual(kernel.tableNames(), ['ip other']);
  const r = await syncBackend(backend, state, changesBetween(state, state));
  t.true(r.full, 'after cleanup there is nothing to trust');
});

/** Starts the backend's watch with the given event source (the fallback runs when the listener's addon cannot be loaded). */
function watchWith(backend: NftablesBackend, source: 'listener' | 'nft monitor', onDrift: (r: DriftReport) => void) {
  const before = process.env.KPROXY_NFT_EVENTS_ADDON;
  if (source === 'nft monitor') process.env.KPROXY_NFT_EVENTS_ADDON = '/nonexistent/kproxy_nft_events.node';
  try {
    return backend.watchDrift(onDrift); // the source is chosen when the watch starts, synchronously
  } finally {
    if (before === undefined) delete process.env.KPROXY_NFT_EVENTS_ADDON;
    else process.env.KPROXY_NFT_EVENTS_ADDON = before;
  }
}

/** numgen's index as the kernel stores it in a key (host order). */
function hostU32(n: number): string {
  const b = Buffer.alloc(4);
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) b.writeUInt32LE(n);
  else b.writeUInt32BE(n);
  return b.toString('hex');
}

// The same foreign transaction as each source prints it.
const tamperLines = {
  listener: [
    'delete rule ip kproxy cluster-3 2',
    `delete element ip kproxy endpoints-tcp 1 0a60000a00500000${hostU32(1)}`,
    'delete element ip kproxy service-ips 1 0a60000a0600000000500000',
    'add element ip kproxy service-ips 1 0a60000a0600000000500000',
  ],
  'nft monitor': [
    'delete rule ip kproxy cluster-3 handle 40',
    'delete rule ip kproxy cluster-3 handle 41',
    'delete element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 1 : 10.244.2.12 . 8080 }',
    'delete element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : goto cluster-3 }',
    'add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : drop }',
  ],
} as const;

for (const source of ['listener', 'nft monitor'] as const) {
  test(`watchDrift (${source}): a foreign flush of a chain and deleted or replaced elements are put back from the record alone; kproxy's own changes are not repairs`, async (t) => {
    const kernel = new FakeNftKernel();
    const stream = fakeStream(kernel.exec);
    const backend = new NftablesBackend({ ...options, exec: stream.exec }, silentLogger());
    const reports: DriftReport[] = [];
    const watch = watchWith(backend, source, (r) => reports.push(r));
    t.teardown(() => watch.stop());
    await watch.ready;
    let state = nodeState(allServices);
    t.true((await syncBackend(backend, state, fullChanges(state))).ok);
    // kproxy's own transaction, reported with the pid of a tool it started.
    stream.children.started(4242, '/usr/sbin/nft');
    stream.emit(source === 'listener' ? 'delete element ip kproxy service-ips 1 0a60000a0600000000500000' : 'delete element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : goto cluster-3 }', '# new generation 10 by process 4242 (nft)');
    t.deepEqual(reports, [], 'own changes are not damage');

    // Someone flushes a spread chain, deletes an endpoint element, and replaces a service-ips verdict.
    kernel.apply([
      'flush chain ip kproxy cluster-3',
      'delete element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 1 }',
      'delete element ip kproxy service-ips { 10.96.0.10 . tcp . 80 }',
      'add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : drop }',
    ].join('\n') + '\n');
    stream.emit(...tamperLines[source], '# new generation 11 by process 777 (nft)');
    t.is(reports.length, 1);
    t.deepEqual(reports[0].damage.map((d) => `${d.what} ${d.object}`), [
      'chain ip kproxy cluster-3',
      'element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 1 }',
      'element ip kproxy service-ips { 10.96.0.10 . tcp . 80 }',
    ]);
    t.is(reports[0].full, undefined);

    // The repair goes with the next sync, here with a change of another Service.
    const web = byName('shop/sticky');
    const next = replace(state, withPort(web, { clusterEndpoints: web.clusterEndpoints.slice(1), allReachableEndpoints: web.clusterEndpoints.slice(1) }));
    const r = await syncBackend(backend, next, changesBetween(state, next));
    t.true(r.ok, r.error?.message);
    t.false(r.full);
    t.deepEqual(r.repairs?.map((d) => d.what), ['chain', 'element', 'element']);
    t.regex(kernel.applied.at(-1)!, /^flush chain ip kproxy cluster-3\nadd rule ip kproxy cluster-3 /);
    const redeclared = /\nadd map ip kproxy endpoints-tcp \{ typeof ip daddr \. tcp dport \. numgen random mod 1 : ip daddr \. tcp dport ; \}\n/;
    if (source === 'nft monitor') t.regex(kernel.applied.at(-1)!, redeclared, 'a transaction that deletes rules declares the maps again (nft monitor forgets the maps a deleted rule used)');
    else t.notRegex(kernel.applied.at(-1)!, redeclared, 'the listener forgets nothing: no maps declared again');
    t.true(kernel.applied.at(-1)!.split('\n').length < 60, 'a small transaction');
    state = next;
    t.is(view(kernel), expected(state));
    const again = await syncBackend(backend, state, changesBetween(state, state));
    t.deepEqual(again.repairs, [], 'nothing twice');

    // A foreign change to the table's structure: rebuilt by a full sync.
    kernel.apply('add chain ip kproxy evil { type filter hook prerouting priority -500 ; policy accept ; }\n');
    stream.emit(source === 'listener' ? 'add chain ip kproxy evil 1' : 'add chain ip kproxy evil { type filter hook prerouting priority -500; policy accept; }', '# new generation 12 by process 778 (nft)');
    t.regex(reports.at(-1)!.full ?? '', /add chain ip kproxy evil by nft \(pid 778\)/);
    const rebuilt = await syncBackend(backend, state, changesBetween(state, state));
    t.true(rebuilt.full);
    t.false(kernel.table('ip', 'kproxy')!.chains.has('evil'));
    t.is(view(kernel), expected(state));
  });
}

test('watchDrift (listener): elements changed without their keys, or too many of one set, refill that set whole from the record', async (t) => {
  const kernel = new FakeNftKernel();
  const stream = fakeStream(kernel.exec);
  const backend = new NftablesBackend({ ...options, exec: stream.exec }, silentLogger());
  const reports: DriftReport[] = [];
  const watch = watchWith(backend, 'listener', (r) => reports.push(r));
  t.teardown(() => watch.stop());
  await watch.ready;
  const state = nodeState(allServices);
  t.true((await syncBackend(backend, state, fullChanges(state))).ok);
  kernel.apply('flush map ip kproxy endpoints-tcp\nadd element ip kproxy endpoints-tcp { 10.9.9.9 . 1 . 0 : 10.9.9.9 . 1 }\ndelete element ip kproxy service-ips { 10.96.0.10 . tcp . 80 }\n');
  const keys = Array.from({ length: 65 }, () => '0a60000a0600000000500000').join(' ');
  stream.emit('delete element ip kproxy endpoints-tcp 12', `add element ip kproxy endpoints-tcp 1`, `delete element ip kproxy service-ips 65 ${keys}`, '# new generation 20 by process 779 (nft)');
  t.deepEqual(reports.map((r) => r.damage.map((d) => `${d.what} ${d.object}`)), [['set ip kproxy endpoints-tcp', 'set ip kproxy service-ips']]);
  const r = await syncBackend(backend, state, changesBetween(state, state));
  t.true(r.ok, r.error?.message);
  t.false(r.full);
  t.deepEqual(r.repairs?.map((d) => d.what), ['set', 'set']);
  t.regex(kernel.applied.at(-1)!, /^flush map ip kproxy endpoints-tcp\nadd element ip kproxy endpoints-tcp \{ /);
  t.regex(kernel.applied.at(-1)!, /\nflush map ip kproxy service-ips\nadd element ip kproxy service-ips \{ /);
  t.is(view(kernel), expected(state));
});

test('watchDrift: the monitor restarts after it ends, and what it may have missed is rebuilt; dropped events of its own burst are not', async (t) => {
  const kernel = new FakeNftKernel();
  const stream = fakeStream(kernel.exec);
  const backend = new NftablesBackend({ ...options, exec: stream.exec }, silentLogger());
  const reports: DriftReport[] = [];
  const watch = backend.watchDrift((r) => reports.push(r));
  t.teardown(() => watch.stop());
  await watch.ready;
  const state = nodeState(allServices);
  t.true((await syncBackend(backend, state, fullChanges(state))).ok);
  stream.children.started(4242, '/usr/sbin/nft');
  stream.emit('# ERROR: We lost some netlink events!');
  t.deepEqual(reports, [], 'a loss while kproxy\'s own tool ran is its own burst');
  stream.crash();
  const deadline = Date.now() + 5000;
  while (reports.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.is(stream.starts, 2, 'started again');
  t.regex(reports[0]?.full ?? '', /missed while not watching/);
  const r = await syncBackend(backend, state, changesBetween(state, state));
  t.true(r.full);
  t.deepEqual(r.repairs?.map((d) => d.what), ['full']);
});

test('watchDrift is off with --nftables-watch-events=false: no monitor runs', async (t) => {
  const cfg = loadConfig(['--proxy-mode', 'nftables', '--nftables-watch-events=false', '--hostname-override', 'n']);
  t.is(cfg.modeSettings.watchEvents, false);
  t.is(loadConfig(['--proxy-mode', 'nftables', '--hostname-override', 'n']).modeSettings.watchEvents, true, 'on by default');
  const kernel = new FakeNftKernel();
  const stream = fakeStream(kernel.exec);
  const backend = new NftablesBackend({ ...options, settings: cfg.modeSettings, exec: stream.exec }, silentLogger());
  const watch = backend.watchDrift(() => t.fail('no report without a watch'));
  await watch.ready;
  t.is(stream.starts, 0);
  await watch.stop();
});

test('readKernel lists both kproxy tables', async (t) => {
  const { backend, kernel } = setup();
  t.is(await backend.readKernel(), '');
  const state = nodeState(allServices);
  await syncBackend(backend, state, fullChanges(state));
  t.is(await backend.readKernel(), kernel.dump('ip', 'kproxy') + kernel.dump('ip6', 'kproxy'));
});

test('the fake kernel refuses what nft would refuse, and applies nothing of a bad batch', (t) => {
  const k = new FakeNftKernel();
  k.apply('add table ip kproxy\nadd map ip kproxy m { type ipv4_addr : verdict ; }\nadd chain ip kproxy c\n');
  const before = k.dump('ip', 'kproxy');
  t.throws(() => k.apply('add chain ip kproxy d\nadd rule ip kproxy c jump missing\n'), { message: /line 2: No such file or directory: chain missing/ });
  t.throws(() => k.apply('add rule ip kproxy c ip daddr vmap @nope\n'), { message: /set nope/ });
  t.throws(() => k.apply('add element ip kproxy m { 10.0.0.1 : goto nowhere }\n'), { message: /chain nowhere/ });
  t.throws(() => k.apply('delete element ip kproxy m { 10.0.0.1 }\n'), { message: /No such file or directory: element/ });
  k.apply('add element ip kproxy m { 10.0.0.1 : goto c }\nadd element ip kproxy m { 10.0.0.1 : goto c }\n');
  t.throws(() => k.apply('add chain ip kproxy e\nadd element ip kproxy m { 10.0.0.1 : goto e }\n'), { message: /File exists/ });
  t.throws(() => k.apply('delete chain ip kproxy c\n'), { message: /busy/ });
  t.throws(() => k.apply('add rule ip kproxy c jump c2 oops {\n'), { message: /line 1/ });
  t.is(k.dump('ip', 'kproxy'), before.replace('type ipv4_addr : verdict\n', 'type ipv4_addr : verdict\n\t\telements = { 10.0.0.1 : goto c }\n'));
});
