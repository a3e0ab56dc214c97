// Warning Events about malformed Services and EndpointSlices: the kube
// source, the tracker and the event recorder together, through the real
// @kubernetes/client-node against the in-process API server. One Event per
// broken object naming every problem, none for good objects, none again on a
// relist, and a refused or rate-limited post never holds up syncing.
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { KubeEventRecorder, type EventRecorderOptions } from '../proxy/source/kube-events.ts';
import { KubeSource } from '../proxy/source/kube.ts';
import { Tracker } from '../proxy/tracker.ts';
import { validateEndpointSlice, validateService } from '../proxy/validate.ts';
import { TestApiServer, type KubeObject } from './helpers/apiserver.ts';
import { eventually } from './helpers/source-recorder.ts';

const NODE = 'node-a';

function service(name: string, port: number, protocol = 'TCP', namespace = 'shop'): KubeObject {
  return {
    kind: 'Service', metadata: { namespace, name },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port, protocol, targetPort: 8080 }] },
  };
}

function slice(name: string, serviceName: string, ips: string[], namespace = 'shop'): KubeObject {
  return {
    kind: 'EndpointSlice', metadata: { namespace, name, labels: { 'kubernetes.io/service-name': serviceName } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: NODE })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

interface LogLine { level: number; msg: string; err?: string }

interface Rig {
  api: TestApiServer;
  tracker: Tracker;
  recorder: KubeEventRecorder;
  logs: LogLine[];
  start(): Promise<void>;
  /** Service port keys of the tracker's current state. */
  ports(): string[];
}

async function rig(t: ExecutionContext, recorderOpts: Partial<EventRecorderOptions> = {}): Promise<Rig> {
  const api = await TestApiServer.start();
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const recorder = new KubeEventRecorder({ kubeconfig: api.kubeconfigPath(), nodeName: NODE, ...recorderOpts }, log.child({ component: 'events' }));
  const tracker = new Tracker({ nodeName: NODE, families: [4], onInvalid: recorder.record }, log.child({ component: 'tracker' }));
  const source = new KubeSource({ kubeconfig: api.kubeconfigPath(), nodeName: NODE, tuning: { retryInitialMs: 50, retryMaxMs: 200 } }, log);
  t.teardown(async () => {
    await source.stop();
    await recorder.close();
    await api.close();
  });
  return {
    api, tracker, recorder, logs,
    start: () => source.start((e) => tracker.apply(e)),
    ports: () => [...tracker.snapshot().state.services.keys()].sort(),
  };
}

type CoreEvent = KubeObject & {
  type?: string; reason?: string; message?: string; reportingComponent?: string; reportingInstance?: string;
  involvedObject?: Record<string, string>; source?: { host?: string; component?: string }; count?: number;
};

const about = (api: TestApiServer, name: string): CoreEvent[] =>
  api.events.filter((e) => (e.object as CoreEvent).involvedObject?.name === name).map((e) => e.object as CoreEvent);

test('a malformed Service and a malformed EndpointSlice get one Warning Event each, naming every problem; good ones none', async (t) => {
  const { api, recorder, start, ports } = await rig(t);
  const badSvc = api.upsert(service('broken', 70000, 'ICMP'));
  const badSlice = api.upsert(slice('web-abc', 'web', ['10.0.0.1', '10.0.0.x', '2001:db8::1']));
  api.upsert(service('web', 80));
  api.upsert(slice('web-def', 'web', ['10.0.0.2']));
  await start();
  await eventually('two Events posted', () => api.events.length >= 2);
  await recorder.flush();

  t.deepEqual(api.events.map((e) => `${e.apiVersion} ${e.namespace}`), ['v1 shop', 'v1 shop']);
  t.is(about(api, 'web').length, 0, 'no Event about the good Service');

  const [svcEvent] = about(api, 'broken');
  const svcProblems = validateService(badSvc as unknown as V1Service);
  t.is(svcProblems.length, 2, 'port and protocol are both wrong');
  t.like(svcEvent, {
    type: 'Warning', reason: 'InvalidService', reportingComponent: 'kproxy', reportingInstance: NODE,
    source: { host: NODE, component: 'kproxy' }, count: 1,
    involvedObject: {
      kind: 'Service', apiVersion: 'v1', namespace: 'shop', name: 'broken',
      uid: badSvc.metadata!.uid!, resourceVersion: badSvc.metadata!.resourceVersion!,
    },
  });
  for (const p of svcProblems) t.true(svcEvent.message!.includes(p), `"${p}" in ${svcEvent.message}`);
  t.regex(svcEvent.metadata!.name!, /^broken\.[0-9a-f]{16}$/);

  const [sliceEvent] = about(api, 'web-abc');
  const sliceProblems = validateEndpointSlice(badSlice as unknown as V1EndpointSlice);
  t.is(sliceProblems.length, 2, 'the bad address and the IPv6 one');
  t.like(sliceEvent, {
    type: 'Warning', reason: 'InvalidEndpointSlice', reportingInstance: NODE,
    involvedObject: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', namespace: 'shop', name: 'web-abc', uid: badSlice.metadata!.uid! },
  });
  for (const p of sliceProblems) t.true(sliceEvent.message!.includes(p), `"${p}" in ${sliceEvent.message}`);
  t.deepEqual(recorder.stats, { posted: 2, alreadyPosted: 0, failed: 0, dropped: 0 });
  t.deepEqual(ports(), ['4/shop/web:http/TCP'], 'the good Service is proxied with its good slice');

  // A relist (history compacted, streams cut: 410 Gone) lists the same versions again: no new Events.
  const lists = (path: string) => api.requests.filter((r) => !r.watch && r.method === 'GET' && r.path === path).length;
  const before = lists('/api/v1/services') + lists('/apis/discovery.k8s.io/v1/endpointslices');
  api.cutStreams();
  api.upsert(service('other', 90));
  api.upsert(slice('other-1', 'other', ['10.0.0.3']));
  api.compact();
  await eventually('Services and EndpointSlices listed again',
    () => lists('/api/v1/services') + lists('/apis/discovery.k8s.io/v1/endpointslices') >= before + 2);
  await api.waitForWatches(3);
  await recorder.flush();
  t.is(api.events.length, 2, 'no Event again for the same versions');

  // A new version that is still broken is reported; fixing it is not.
  api.upsert(service('broken', 70000));
  await eventually('a third Event', () => api.events.length >= 3);
  t.regex(about(api, 'broken')[1].message!, /port 70000/);
  t.notRegex(about(api, 'broken')[1].message!, /ICMP/);
  api.upsert(service('broken', 81));
  await eventually('the fixed Service is proxied', () => ports().includes('4/shop/broken:http/TCP'));
  await recorder.flush();
  t.is(api.events.length, 3);
});

test('an API server refusing Events (no RBAC) does not hold up syncing; warned once', async (t) => {
  const { api, recorder, logs, start, ports } = await rig(t);
  api.rejectEvents(403);
  api.upsert(service('broken', 0));
  api.upsert(service('web', 80));
  await start();
  await eventually('the Event POST was tried', () => api.requests.some((r) => r.method === 'POST' && r.status === 403));
  t.deepEqual(ports(), ['4/shop/web:http/TCP']);

  api.upsert(service('also-broken', 0, 'TCP', 'other'));
  api.upsert(service('db', 5432));
  await eventually('the next good Service is synced', () => ports().includes('4/shop/db:http/TCP'));
  await eventually('both posts answered', () => recorder.stats.failed === 2);
  t.is(api.events.length, 0);
  const warned = logs.filter((l) => l.level === 40 && /could not post an Event/.test(l.msg));
  t.is(warned.length, 1, 'one warning, further failures at debug');
  t.regex(warned[0].err ?? '', /HTTP 403/);
  t.is(logs.filter((l) => l.level === 20 && l.msg === 'could not post Event').length, 1);

  // Accepted again: the next broken version gets its Event.
  api.rejectEvents(undefined);
  api.upsert(service('broken', 99999));
  await eventually('an Event once allowed', () => api.events.length === 1);
  t.is(about(api, 'broken').length, 1);
});

test('Event posts failing with a server error do not hold up syncing either', async (t) => {
  const { api, recorder, start, ports } = await rig(t, { timeoutMs: 300 });
  api.rejectEvents(500);
  api.upsert(service('broken', 0));
  await start();
  api.upsert(service('web', 80));
  await eventually('synced while the post fails', () => ports().includes('4/shop/web:http/TCP'));
  await recorder.flush();
  t.is(recorder.stats.failed, 1);
});

test('Events are rate limited: a burst, then one per refill period; the log still names every object', async (t) => {
  let now = 1_000_000;
  const { api, recorder, logs, start } = await rig(t, { burst: 2, refillMs: 60_000, now: () => now });
  for (let i = 0; i < 5; i++) api.upsert(service(`broken-${i}`, 0));
  await start();
  await recorder.flush();
  t.is(api.events.length, 2);
  t.is(recorder.stats.dropped, 3);
  t.is(logs.filter((l) => l.level === 40 && /too many Events/.test(l.msg)).length, 1);
  t.is(logs.filter((l) => l.level === 40 && l.msg === 'invalid Service skipped').length, 5);

  now += 60_000;
  api.upsert(service('broken-9', 0));
  await eventually('one more after the refill', () => api.events.length === 3);
  api.upsert(service('broken-10', 0));
  await new Promise((r) => setTimeout(r, 200));
  await recorder.flush();
  t.is(api.events.length, 3, 'the bucket is empty again');
});

test('every node tells of the same version under one name: one Event, the others see AlreadyExists quietly', async (t) => {
  const api = await TestApiServer.start();
  t.teardown(() => api.close());
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const a = new KubeEventRecorder({ kubeconfig: api.kubeconfigPath(), nodeName: 'node-a' }, log);
  const b = new KubeEventRecorder({ kubeconfig: api.kubeconfigPath(), nodeName: 'node-b' }, log);
  const broken = api.upsert(service('broken', 0)) as unknown as V1Service;
  const invalid = { kind: 'Service' as const, object: broken, problems: validateService(broken) };
  a.record(invalid);
  await a.flush();
  b.record(invalid);
  await b.flush();
  t.is(api.events.length, 1);
  t.like(api.events[0].object, { reportingInstance: 'node-a' });
  t.deepEqual(b.stats, { posted: 0, alreadyPosted: 1, failed: 0, dropped: 0 });
  t.false(logs.some((l) => l.level >= 40), 'nothing to warn about');

  // A new version is a new Event.
  const again = api.upsert(service('broken', 0)) as unknown as V1Service;
  b.record({ ...invalid, object: again });
  await b.close();
  t.is(api.events.length, 2);
  t.not(api.events[1].object.metadata?.name, api.events[0].object.metadata?.name);
});

test('test API server: Event POSTs are checked like the real server does', async (t) => {
  const api = await TestApiServer.start();
  t.teardown(() => api.close());
  const post = (path: string, body: unknown) => fetch(`${api.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const ok = { metadata: { name: 'x.1' }, involvedObject: { kind: 'Service', namespace: 'a', name: 'x' }, type: 'Warning' };
  const created = await post('/api/v1/namespaces/a/events', ok);
  t.is(created.status, 201);
  t.like(await created.json(), { kind: 'Event', metadata: { name: 'x.1', namespace: 'a' } });
  t.is((await post('/api/v1/namespaces/a/events', ok)).status, 409, 'same name twice');
  t.is((await post('/api/v1/namespaces/b/events', { ...ok, metadata: { name: 'x.2', namespace: 'a' } })).status, 400, 'namespace differs from the path');
  t.is((await post('/api/v1/namespaces/b/events', { ...ok, metadata: { name: 'x.3' } })).status, 422, 'involved object in another namespace');
  t.is((await post('/apis/events.k8s.io/v1/namespaces/a/events', { metadata: { name: 'y.1' }, regarding: { namespace: 'a', name: 'y' } })).status, 201);
  t.is((await post('/api/v1/namespaces/a/services', {})).status, 405, 'other POSTs still refused');
  t.deepEqual(api.events.map((e) => `${e.apiVersion} ${e.object.metadata?.name}`), ['v1 x.1', 'events.k8s.io/v1 y.1']);
});
