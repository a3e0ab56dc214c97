// The kube source against the in-process API server, through the real
// @kubernetes/client-node: initial list, watch events, bookmarks, relist
// after 410 Gone, cut streams, an unreachable API server, the Node field
// selector and paging.
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { KubeSource } from '../proxy/source/kube.ts';
import type { ReflectorTuning } from '../proxy/source/kube-reflector.ts';
import { TestApiServer, type Kind, type KubeObject } from './helpers/apiserver.ts';
import { eventually, SourceRecorder } from './helpers/source-recorder.ts';

const NODE = 'node-a';

function service(namespace: string, name: string, clusterIP: string): KubeObject {
  return {
    kind: 'Service', metadata: { namespace, name },
    spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] },
  };
}

function slice(namespace: string, name: string, serviceName: string, ips: string[]): KubeObject {
  return {
    kind: 'EndpointSlice', metadata: { namespace, name, labels: { 'kubernetes.io/service-name': serviceName } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: NODE })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

function node(name: string, zone = 'zone-1'): KubeObject {
  return { kind: 'Node', metadata: { name, labels: { 'topology.kubernetes.io/zone': zone } } };
}

interface LogLine { level: number; msg: string; resource?: string; retryInMs?: number; err?: string }

interface Rig {
  api: TestApiServer;
  rec: SourceRecorder;
  logs: LogLine[];
  source: KubeSource;
}

async function rig(t: ExecutionContext, tuning: Partial<ReflectorTuning> = {}): Promise<Rig> {
  const api = await TestApiServer.start();
  const logs: LogLine[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const source = new KubeSource(
    { kubeconfig: api.kubeconfigPath(), nodeName: NODE, tuning: { retryInitialMs: 100, retryMaxMs: 800, ...tuning } },
    log,
  );
  t.teardown(async () => {
    await source.stop();
    await api.close();
  });
  return { api, rec: new SourceRecorder(), logs, source };
}

/** What the node should believe: the server's objects, only our Node. */
function serverView(api: TestApiServer, kind: Kind): string[] {
  return api.store.list(kind)!
    .filter((o) => kind !== 'Node' || o.metadata?.name === NODE)
    .map((o) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name}@${o.metadata?.resourceVersion}`)
    .sort();
}

const KINDS = ['Service', 'EndpointSlice', 'Node'] as const satisfies readonly Kind[];

async function converged(t: ExecutionContext, { api, rec }: Rig): Promise<void> {
  await eventually('the source to converge on the server state',
    () => KINDS.every((k) => JSON.stringify(rec.snapshot(k)) === JSON.stringify(serverView(api, k))));
  for (const k of KINDS) t.deepEqual(rec.snapshot(k), serverView(api, k), k);
}

function lists(api: TestApiServer, from = 0): string[] {
  return api.requests.slice(from).filter((r) => !r.watch).map((r) => r.path);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function seeded(t: ExecutionContext, tuning: Partial<ReflectorTuning> = {}): Promise<Rig> {
  const r = await rig(t, tuning);
  r.api.upsert(service('ns1', 'a', '10.96.0.10'));
  r.api.upsert(service('ns2', 'b', '10.96.0.11'));
  r.api.upsert(slice('ns1', 'a-1', 'a', ['10.244.1.5']));
  r.api.upsert(node(NODE));
  r.api.upsert(node('node-b'));
  await r.source.start(r.rec.emit);
  await r.api.waitForWatches(3);
  return r;
}

test('initial list emits every object, then Synced once, then start() resolves', async (t) => {
  const r = await seeded(t);
  const events = r.rec.describe();
  t.is(events.at(-1), 'Synced');
  t.is(events.filter((e) => e === 'Synced').length, 1);
  t.deepEqual(events.slice(0, -1).sort(), [
    'upsert EndpointSlice ns1/a-1',
    `upsert Node /${NODE}`,
    'upsert Service ns1/a',
    'upsert Service ns2/b',
  ]);
  await converged(t, r);
  // Objects arrive as the API serialises them, kind included (list items lack it on the wire).
  const a = r.rec.objects.get('Service')!.get('ns1/a') as KubeObject;
  t.is(a.kind, 'Service');
  t.is((a.spec as { clusterIP: string }).clusterIP, '10.96.0.10');
  t.deepEqual(lists(r.api).sort(), ['/api/v1/nodes', '/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices']);
  // Watches ask for bookmarks and a server-side end after a randomised 5-10 minutes.
  const watches = r.api.requests.filter((q) => q.watch);
  t.is(watches.length, 3);
  for (const w of watches) {
    t.is(w.query.allowWatchBookmarks, 'true');
    const seconds = Number(w.query.timeoutSeconds);
    t.true(seconds >= 300 && seconds < 600, `timeoutSeconds=${seconds}`);
  }
});

test('ADDED, MODIFIED and DELETED reach the consumer in order, without relisting', async (t) => {
  const r = await seeded(t);
  const mark = r.rec.events.length;
  const requests = r.api.requests.length;
  r.api.upsert(service('ns3', 'c', '10.96.0.12'));
  r.api.upsert(service('ns1', 'a', '10.96.0.99'));
  r.api.remove({ kind: 'Service', namespace: 'ns2', name: 'b' });
  r.api.upsert(slice('ns1', 'a-1', 'a', ['10.244.1.5', '10.244.2.7']));
  r.api.remove({ kind: 'EndpointSlice', namespace: 'ns1', name: 'a-1' });
  await converged(t, r);
  const byKind = (kind: string) => r.rec.describe(mark).filter((e) => e.includes(` ${kind} `));
  t.deepEqual(byKind('Service'), ['upsert Service ns3/c', 'upsert Service ns1/a', 'delete Service ns2/b']);
  t.deepEqual(byKind('EndpointSlice'), ['upsert EndpointSlice ns1/a-1', 'delete EndpointSlice ns1/a-1']);
  const a = r.rec.objects.get('Service')!.get('ns1/a') as KubeObject;
  t.is((a.spec as { clusterIP: string }).clusterIP, '10.96.0.99');
  t.deepEqual(lists(r.api, requests), []);
});

test('bookmarks emit nothing but advance the resourceVersion a reconnect resumes from', async (t) => {
  const r = await seeded(t);
  const mark = r.rec.events.length;
  // A change our Node watch filters out, then a bookmark that carries its version.
  const other = r.api.upsert(node('node-b', 'zone-2'));
  r.api.bookmark();
  r.api.bookmark();
  await sleep(200);
  t.deepEqual(r.rec.describe(mark), []);
  const requests = r.api.requests.length;
  r.api.cutStreams();
  await r.api.waitForWatches(3);
  const nodeWatch = r.api.requests.slice(requests).find((q) => q.watch && q.path === '/api/v1/nodes');
  t.is(nodeWatch?.query.resourceVersion, other.metadata?.resourceVersion);
  t.is(nodeWatch?.query.allowWatchBookmarks, 'true');
  t.deepEqual(lists(r.api, requests), [], 'resuming from a bookmark needs no relist');
  t.deepEqual(r.rec.describe(mark), []);
});

test('a stream cut mid-way reconnects from its resourceVersion and catches up on what it missed', async (t) => {
  const r = await seeded(t);
  const mark = r.rec.events.length;
  const requests = r.api.requests.length;
  r.api.cutStreams();
  r.api.remove({ kind: 'Service', namespace: 'ns1', name: 'a' });
  r.api.upsert(service('ns3', 'c', '10.96.0.12'));
  await converged(t, r);
  await r.api.waitForWatches(3);
  t.deepEqual(r.rec.deletions(mark), ['delete Service ns1/a']);
  t.deepEqual(lists(r.api, requests), [], 'history was still there: no relist');
  t.true(r.logs.some((l) => l.level === 40 && l.resource === 'Service' && /failed/.test(l.msg)));
});

test('after compaction a reconnect gets 410 Gone, relists and converges, deleting what went meanwhile', async (t) => {
  const r = await seeded(t);
  const mark = r.rec.events.length;
  const requests = r.api.requests.length;
  r.api.cutStreams();
  r.api.remove({ kind: 'Service', namespace: 'ns1', name: 'a' });
  r.api.remove({ kind: 'EndpointSlice', namespace: 'ns1', name: 'a-1' });
  r.api.upsert(service('ns2', 'b', '10.96.0.77'));
  r.api.upsert(service('ns3', 'c', '10.96.0.12'));
  r.api.compact();
  await converged(t, r);
  // The Node did not change, so convergence does not wait for its relist.
  await eventually('every resource to relist and watch again',
    () => lists(r.api, requests).length >= 3 && r.api.openWatches === 3);
  t.deepEqual(r.rec.deletions(mark).sort(), ['delete EndpointSlice ns1/a-1', 'delete Service ns1/a']);
  t.deepEqual(lists(r.api, requests).sort(), ['/api/v1/nodes', '/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices'],
    'every watch resumed from a compacted version, so each relisted once');
  t.true(r.logs.some((l) => /resourceVersion expired; relisting/.test(l.msg)));
});

test('an unreachable API server (connections refused) deletes nothing; on return the source converges', async (t) => {
  const r = await seeded(t);
  const before = KINDS.map((k) => r.rec.snapshot(k));
  const mark = r.rec.events.length;
  await r.api.pause('refuse');
  r.api.remove({ kind: 'Service', namespace: 'ns1', name: 'a' });
  r.api.remove({ kind: 'Node', name: NODE });
  r.api.upsert(service('ns3', 'c', '10.96.0.12'));
  await eventually('two refused attempts per resource', () =>
    KINDS.every((k) => r.logs.filter((l) => l.level === 40 && l.resource === k && /ECONNREFUSED/.test(l.err ?? '')).length >= 2));
  t.deepEqual(r.rec.describe(mark), [], 'nothing emitted while unreachable');
  t.deepEqual(KINDS.map((k) => r.rec.snapshot(k)), before);
  await r.api.resume();
  await converged(t, r);
  t.deepEqual(r.rec.deletions(mark).sort(), [`delete Node /${NODE}`, 'delete Service ns1/a']);
});

test('503 from the API server with compaction meanwhile: no deletions, one log per failure with growing delays, relist on return', async (t) => {
  const r = await seeded(t);
  const mark = r.rec.events.length;
  const requests = r.api.requests.length;
  await r.api.pause('unavailable');
  r.api.remove({ kind: 'Service', namespace: 'ns2', name: 'b' });
  r.api.compact();
  const refused = (path: string) => r.api.requests.slice(requests).filter((q) => q.status === 503 && q.path === path).length;
  await eventually('four refused attempts per resource',
    () => ['/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices', '/api/v1/nodes'].every((p) => refused(p) >= 4));
  t.deepEqual(r.rec.describe(mark), []);
  await r.api.resume();
  await converged(t, r);
  t.deepEqual(r.rec.deletions(mark), ['delete Service ns2/b']);

  const failed = r.api.requests.slice(requests).filter((q) => q.status === 503);
  for (const [kind, path] of [['Service', '/api/v1/services'], ['Node', '/api/v1/nodes']]) {
    const warnings = r.logs.filter((l) => l.level === 40 && l.resource === kind);
    // One for the cut stream, one per refused attempt.
    t.is(warnings.length, 1 + failed.filter((q) => q.path === path).length, kind);
    const delays = warnings.map((w) => w.retryInMs!);
    t.true(delays[0] <= 100, `first retry after at most 100 ms (${delays})`);
    t.true(delays.every((d) => d <= 800), `retries capped at 800 ms (${delays})`);
    t.true(Math.max(...delays) > 400, `delays grow (${delays})`);
    t.true(warnings.slice(1).every((w) => /HTTP 503/.test(w.err ?? '')), 'the log line names the answer');
  }
  t.true(r.logs.some((l) => l.level === 30 && l.resource === 'Service' && /recovered/.test(l.msg)));
});

test('start() waits through an unreachable API server and resolves once it answers', async (t) => {
  const r = await rig(t);
  r.api.upsert(service('ns1', 'a', '10.96.0.10'));
  await r.api.pause('refuse');
  let resolved = false;
  const started = r.source.start(r.rec.emit).then(() => {
    resolved = true;
  });
  await sleep(700);
  t.false(resolved);
  t.deepEqual(r.rec.describe(), []);
  await r.api.resume();
  await started;
  t.deepEqual(r.rec.describe(), ['upsert Service ns1/a', 'Synced']);
});

test('stop() before the first list rejects start() and opens no more requests', async (t) => {
  const r = await rig(t);
  await r.api.pause('unavailable');
  const started = r.source.start(r.rec.emit);
  await eventually('a list attempt per resource', () => new Set(r.api.requests.map((q) => q.path)).size === 3);
  await r.source.stop();
  await t.throwsAsync(started, { message: /stopped before the initial list/ });
  await sleep(300); // a request already on the wire may still land
  const count = r.api.requests.length;
  t.true(count >= 3, `it tried (${count} requests)`);
  await sleep(1000);
  t.is(r.api.requests.length, count);
  t.deepEqual(r.rec.describe(), []);
});

test('only this Node is listed and watched', async (t) => {
  const r = await rig(t);
  r.api.upsert(node(NODE));
  r.api.upsert(node('node-b'));
  r.api.upsert(node('node-c'));
  await r.source.start(r.rec.emit);
  await r.api.waitForWatches(3);
  t.deepEqual(r.rec.snapshot('Node').map((s) => s.split('@')[0]), [`/${NODE}`]);
  const mark = r.rec.events.length;
  r.api.upsert(node('node-b', 'zone-9'));
  r.api.remove({ kind: 'Node', name: 'node-c' });
  r.api.upsert(node(NODE, 'zone-2'));
  await eventually('our Node update', () => r.rec.events.length > mark);
  await sleep(200);
  t.deepEqual(r.rec.describe(mark), [`upsert Node /${NODE}`]);
  const ours = r.rec.objects.get('Node')!.get(`/${NODE}`) as KubeObject;
  t.is(ours.metadata?.labels?.['topology.kubernetes.io/zone'], 'zone-2');
  const nodeRequests = r.api.requests.filter((q) => q.path === '/api/v1/nodes');
  t.true(nodeRequests.length >= 2);
  t.true(nodeRequests.every((q) => q.query.fieldSelector === `metadata.name=${NODE}`));
});

test('large lists are fetched in pages and delivered whole', async (t) => {
  const r = await rig(t, { pageSize: 2 });
  for (let i = 0; i < 5; i++) r.api.upsert(service('ns', `s${i}`, `10.96.1.${i}`));
  await r.source.start(r.rec.emit);
  t.is(r.rec.objects.get('Service')!.size, 5);
  const pages = r.api.requests.filter((q) => !q.watch && q.path === '/api/v1/services');
  t.deepEqual(pages.map((q) => [q.query.limit, q.query.continue !== undefined]), [['2', false], ['2', true], ['2', true]]);
  await converged(t, r);
});

test('a clean server-side end of a watch is not a failure: it reconnects and keeps converging', async (t) => {
  const r = await seeded(t);
  const requests = r.api.requests.length;
  r.api.endStreams();
  await r.api.waitForWatches(3);
  r.api.upsert(service('ns3', 'c', '10.96.0.12'));
  await converged(t, r);
  await r.api.waitForWatches(3);
  t.deepEqual(lists(r.api, requests), []);
  t.false(r.logs.some((l) => l.level >= 40), 'no warnings');
});

test('a watch silent beyond the idle limit is reopened from its resourceVersion, quietly', async (t) => {
  const r = await seeded(t, { watchIdleTimeoutMs: 300 });
  const requests = r.api.requests.length;
  await eventually('idle watches to be reopened', () => r.api.requests.slice(requests).filter((q) => q.watch).length >= 6);
  r.api.upsert(service('ns3', 'c', '10.96.0.12'));
  await converged(t, r);
  t.deepEqual(lists(r.api, requests), []);
  t.false(r.logs.some((l) => l.level >= 40), 'an idle reopen is not a failure');
});
