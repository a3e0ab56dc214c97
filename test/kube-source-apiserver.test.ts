// The test API server itself speaks the list/watch protocol the way the
// real one does (what the kube source and end-to-end tests rely on).
import test, { type ExecutionContext } from 'ava';
import { TestApiServer, type KubeObject } from './helpers/apiserver.ts';

async function server(t: ExecutionContext): Promise<TestApiServer> {
  const api = await TestApiServer.start();
  t.teardown(() => api.close());
  return api;
}

const svc = (namespace: string, name: string, labels: Record<string, string> = {}): KubeObject =>
  ({ kind: 'Service', metadata: { namespace, name, labels }, spec: { clusterIP: '10.96.0.1' } });

interface WatchEvent { type: string; object: KubeObject & { code?: number; reason?: string } }

/** Reads watch events until `n` arrived or the stream ended; `ended` says which. */
async function readEvents(url: string, n: number): Promise<{ status: number; events: WatchEvent[]; ended: boolean }> {
  const res = await fetch(url);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const events: WatchEvent[] = [];
  while (events.length < n) {
    const { done, value } = await reader.read();
    if (done) return { status: res.status, events, ended: true };
    buffer += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      events.push(JSON.parse(buffer.slice(0, nl)));
      buffer = buffer.slice(nl + 1);
    }
  }
  await reader.cancel();
  return { status: res.status, events, ended: false };
}

const brief = (events: WatchEvent[]) => events.map((e) => `${e.type} ${e.object.metadata?.name ?? ''}@${e.object.metadata?.resourceVersion ?? ''}`);

test('LIST answers a typed List with the current resourceVersion; items carry no kind', async (t) => {
  const api = await server(t);
  api.upsert(svc('b', 'two'));
  api.upsert(svc('a', 'one'));
  const res = await fetch(`${api.url}/api/v1/services`);
  t.is(res.status, 200);
  const list = await res.json() as { kind: string; apiVersion: string; metadata: { resourceVersion: string }; items: KubeObject[] };
  t.is(list.kind, 'ServiceList');
  t.is(list.apiVersion, 'v1');
  t.is(list.metadata.resourceVersion, api.resourceVersion);
  t.deepEqual(list.items.map((i) => `${i.metadata?.namespace}/${i.metadata?.name}`), ['a/one', 'b/two']);
  t.true(list.items.every((i) => i.kind === undefined && i.apiVersion === undefined));
  const ns = await (await fetch(`${api.url}/api/v1/namespaces/b/services`)).json() as { items: KubeObject[] };
  t.deepEqual(ns.items.map((i) => i.metadata?.name), ['two']);
  const one = await (await fetch(`${api.url}/api/v1/namespaces/a/services/one`)).json() as KubeObject;
  t.is(one.kind, 'Service');
  t.is((await fetch(`${api.url}/api/v1/namespaces/a/services/nope`)).status, 404);
  t.is((await fetch(`${api.url}/api/v1/pods`)).status, 404);
});

test('watch from a resourceVersion replays later changes, then streams live ones', async (t) => {
  const api = await server(t);
  const one = api.upsert(svc('a', 'one'));
  const from = one.metadata!.resourceVersion!;
  api.upsert(svc('a', 'two'));
  api.upsert(svc('a', 'one', { x: 'y' }));
  const reading = readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${from}`, 3);
  await api.waitForWatches(1);
  api.remove({ kind: 'Service', namespace: 'a', name: 'two' });
  const { status, events } = await reading;
  t.is(status, 200);
  const v = Number(from);
  t.deepEqual(brief(events), [`ADDED two@${v + 1}`, `MODIFIED one@${v + 2}`, `DELETED two@${v + 3}`]);
});

test('watch without a resourceVersion starts with ADDED for every current object', async (t) => {
  const api = await server(t);
  api.upsert(svc('a', 'one'));
  api.upsert(svc('a', 'two'));
  const { events } = await readEvents(`${api.url}/api/v1/services?watch=1`, 2);
  t.deepEqual(events.map((e) => `${e.type} ${e.object.metadata?.name}`), ['ADDED one', 'ADDED two']);
});

test('a compacted resourceVersion gets one ERROR event with a 410 Expired Status and the stream ends', async (t) => {
  const api = await server(t);
  const old = api.upsert(svc('a', 'one')).metadata!.resourceVersion!;
  api.upsert(svc('a', 'two'));
  api.compact();
  const { status, events, ended } = await readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${old}`, 2);
  t.is(status, 200);
  t.true(ended);
  t.is(events.length, 1);
  t.is(events[0].type, 'ERROR');
  t.is(events[0].object.kind, 'Status');
  t.is(events[0].object.code, 410);
  t.is(events[0].object.reason, 'Expired');
  // The current version is still fine to watch from.
  const fresh = readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${api.resourceVersion}`, 1);
  await api.waitForWatches(1);
  api.upsert(svc('a', 'three'));
  t.deepEqual((await fresh).events.map((e) => e.type), ['ADDED']);
});

test('bookmarks go only to watches that allow them, with the current resourceVersion', async (t) => {
  const api = await server(t);
  const rv = api.resourceVersion;
  const withBm = readEvents(`${api.url}/api/v1/nodes?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`, 1);
  const withoutBm = readEvents(`${api.url}/api/v1/nodes?watch=true&resourceVersion=${rv}`, 1);
  await api.waitForWatches(2);
  api.upsert(svc('a', 'one')); // another kind: no event for node watches
  api.bookmark();
  const got = await withBm;
  t.deepEqual(got.events.map((e) => [e.type, e.object.kind, e.object.metadata?.resourceVersion]), [['BOOKMARK', 'Node', api.resourceVersion]]);
  api.upsert({ kind: 'Node', metadata: { name: 'n1' } });
  t.deepEqual((await withoutBm).events.map((e) => e.type), ['ADDED']);
});

test('selectors: field selector on name, label selector with objects entering and leaving it', async (t) => {
  const api = await server(t);
  api.upsert({ kind: 'Node', metadata: { name: 'n1' } });
  api.upsert({ kind: 'Node', metadata: { name: 'n2' } });
  const nodes = await (await fetch(`${api.url}/api/v1/nodes?fieldSelector=metadata.name%3Dn2`)).json() as { items: KubeObject[] };
  t.deepEqual(nodes.items.map((i) => i.metadata?.name), ['n2']);
  const rv = api.resourceVersion;
  const reading = readEvents(`${api.url}/api/v1/services?watch=true&resourceVersion=${rv}&labelSelector=app%3Dweb,!skip`, 3);
  await api.waitForWatches(1);
  api.upsert(svc('a', 'one', { app: 'db' }));
  api.upsert(svc('a', 'one', { app: 'web' }));
  api.upsert(svc('a', 'one', { app: 'web', skip: '' }));
  api.upsert(svc('a', 'two', { app: 'web' }));
  t.deepEqual((await reading).events.map((e) => `${e.type} ${e.object.metadata?.name}`), ['ADDED one', 'DELETED one', 'ADDED two']);
  const bad = await fetch(`${api.url}/api/v1/services?labelSelector=app+in+(a,b)`);
  t.is(bad.status, 400);
  const badField = await fetch(`${api.url}/api/v1/services?fieldSelector=spec.clusterIP%3D1.2.3.4`);
  t.is(badField.status, 400);
});

test('paging: continue tokens walk one snapshot; an expired one gets 410', async (t) => {
  const api = await server(t);
  for (const n of ['a', 'b', 'c']) api.upsert(svc('ns', n));
  const first = await (await fetch(`${api.url}/api/v1/services?limit=2`)).json() as { metadata: { continue: string; resourceVersion: string; remainingItemCount: number }; items: KubeObject[] };
  t.deepEqual(first.items.map((i) => i.metadata?.name), ['a', 'b']);
  t.is(first.metadata.remainingItemCount, 1);
  api.remove({ kind: 'Service', namespace: 'ns', name: 'c' }); // not seen by this snapshot
  const second = await (await fetch(`${api.url}/api/v1/services?limit=2&continue=${first.metadata.continue}`)).json() as { metadata: { continue?: string; resourceVersion: string }; items: KubeObject[] };
  t.deepEqual(second.items.map((i) => i.metadata?.name), ['c']);
  t.is(second.metadata.continue, undefined);
  t.is(second.metadata.resourceVersion, first.metadata.resourceVersion);
  api.compact();
  t.is((await fetch(`${api.url}/api/v1/services?limit=2&continue=${first.metadata.continue}`)).status, 410);
});

test('cutStreams destroys streams, endStreams and timeoutSeconds end them cleanly', async (t) => {
  const api = await server(t);
  const url = `${api.url}/api/v1/services?watch=true&resourceVersion=${api.resourceVersion}`;
  const cut = readEvents(url, 1);
  await api.waitForWatches(1);
  api.cutStreams();
  await t.throwsAsync(cut);
  const ended = readEvents(url, 1);
  await api.waitForWatches(1);
  api.endStreams();
  t.deepEqual(await ended, { status: 200, events: [], ended: true });
  const timed = await readEvents(`${url}&timeoutSeconds=1`, 1);
  t.true(timed.ended);
  t.is(api.openWatches, 0);
});

test('pause refuses connections or answers 503; resume serves again on the same port; requests are logged', async (t) => {
  const api = await server(t);
  const url = `${api.url}/api/v1/services`;
  await api.pause('refuse');
  const err = await t.throwsAsync(fetch(url));
  t.is((err?.cause as { code?: string } | undefined)?.code, 'ECONNREFUSED');
  api.upsert(svc('a', 'one')); // the store keeps working meanwhile
  await api.resume();
  t.is((await fetch(url)).status, 200);
  await api.pause('unavailable');
  const res = await fetch(url);
  t.is(res.status, 503);
  t.is(((await res.json()) as { code: number }).code, 503);
  await api.resume();
  t.deepEqual(api.requests.map((r) => [r.path, r.status]), [['/api/v1/services', 200], ['/api/v1/services', 503]]);
});

test('bookmarkIntervalMs sends bookmarks on its own', async (t) => {
  const api = await TestApiServer.start({ bookmarkIntervalMs: 50 });
  t.teardown(() => api.close());
  const { events } = await readEvents(`${api.url}/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${api.resourceVersion}&allowWatchBookmarks=true`, 2);
  t.deepEqual(events.map((e) => [e.type, e.object.kind, e.object.apiVersion]),
    [['BOOKMARK', 'EndpointSlice', 'discovery.k8s.io/v1'], ['BOOKMARK', 'EndpointSlice', 'discovery.k8s.io/v1']]);
});
