// FileSource against real files: initial list, then only the difference
// when the file is edited in place or replaced by rename, and a broken file
// leaving the previous content in force.
import test from 'ava';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseObjects } from '../proxy/objects.ts';
import { FileSource } from '../proxy/source/file.ts';
import type { SourceEvent } from '../proxy/source/source.ts';
import { Tracker } from '../proxy/tracker.ts';
import { clusterYaml, recordingLogger } from './fixtures/proxy/objects.ts';
import { eventually } from './helpers/source-recorder.ts';
import { silentLogger } from '../lib/log.ts';

const svcDoc = (name: string, ip: string, port = 80) => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default}
spec: {clusterIP: ${ip}, ports: [{name: http, port: ${port}}]}
`;
const sliceDoc = (svc: string, ...ips: string[]) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${svc}-1, namespace: default, labels: {kubernetes.io/service-name: ${svc}}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [${ips.map((ip) => `{addresses: [${ip}]}`).join(', ')}]
`;
const nodeDoc = (name: string) => `apiVersion: v1
kind: Node
metadata: {name: ${name}, labels: {topology.kubernetes.io/zone: zone-a}}
status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
`;
const docs = (...d: string[]) => d.join('---\n');

const describe = (e: SourceEvent) => e.kind === 'Synced' ? 'Synced' : `${e.type} ${e.kind} ${e.object.metadata?.name}`;

async function setup(t: { teardown(fn: () => Promise<void>): void }, text: string, watch = true) {
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-file-source-'));
  const path = join(dir, 'cluster.yaml');
  await writeFile(path, text);
  const { log, records } = recordingLogger();
  const source = new FileSource(path, log, { watch, debounceMs: 30 });
  const events: SourceEvent[] = [];
  t.teardown(async () => {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, path, source, events, records, emit: (e: SourceEvent) => events.push(e) };
}

const waitFor = (cond: () => boolean, what: string): Promise<void> => eventually(what, cond, 5000);

test('start emits every object, then Synced', async (t) => {
  const s = await setup(t, docs(nodeDoc('node-a'), svcDoc('web', '172.30.0.1'), sliceDoc('web', '10.0.0.1')));
  await s.source.start(s.emit);
  t.deepEqual(s.events.map(describe), ['upsert Node node-a', 'upsert Service web', 'upsert EndpointSlice web-1', 'Synced']);
});

test('an edit in place emits only the difference', async (t) => {
  const s = await setup(t, docs(svcDoc('web', '172.30.0.1'), svcDoc('db', '172.30.0.2'), sliceDoc('web', '10.0.0.1')));
  await s.source.start(s.emit);
  s.events.length = 0;
  await writeFile(s.path, docs(svcDoc('web', '172.30.0.1', 8080), svcDoc('db', '172.30.0.2'), nodeDoc('node-a')));
  await waitFor(() => s.events.length >= 3, 'three events');
  await new Promise((r) => setTimeout(r, 100)); // nothing more may follow
  t.deepEqual(s.events.map(describe).sort(), ['delete EndpointSlice web-1', 'upsert Node node-a', 'upsert Service web']);
  const upsert = s.events.find((e) => e.kind === 'Service');
  t.is(upsert?.kind === 'Service' ? upsert.object.spec?.ports?.[0].port : -1, 8080);
});

test('a replacement by rename is seen, and so is a second one', async (t) => {
  const s = await setup(t, docs(svcDoc('web', '172.30.0.1')));
  await s.source.start(s.emit);
  s.events.length = 0;
  const tmp = join(s.dir, '.cluster.yaml.swp');
  await writeFile(tmp, docs(svcDoc('web', '172.30.0.1'), svcDoc('db', '172.30.0.2')));
  await rename(tmp, s.path);
  await waitFor(() => s.events.length >= 1, 'the first replacement');
  await writeFile(tmp, docs(svcDoc('db', '172.30.0.2')));
  await rename(tmp, s.path);
  await waitFor(() => s.events.length >= 2, 'the second replacement');
  t.deepEqual(s.events.map(describe), ['upsert Service db', 'delete Service web']);
});

test('a broken file is logged and the previous content stays; the fix is diffed against it', async (t) => {
  const s = await setup(t, docs(svcDoc('web', '172.30.0.1')));
  await s.source.start(s.emit);
  s.events.length = 0;
  await writeFile(s.path, 'apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n');
  await waitFor(() => s.records.some((r) => r.msg === 'cannot parse the file; previous content stays in force'), 'the parse error');
  t.deepEqual(s.events, []);
  const logged = s.records.find((r) => r.level === 50)!;
  t.true((logged.errors as string[])[0].startsWith('document 1:'));
  await writeFile(s.path, docs(svcDoc('web', '172.30.0.1'), svcDoc('db', '172.30.0.2')));
  await waitFor(() => s.events.length >= 1, 'the fixed file');
  t.deepEqual(s.events.map(describe), ['upsert Service db']);
});

test('an empty file (caught mid-write) keeps the previous content; an empty List removes everything', async (t) => {
  const s = await setup(t, docs(svcDoc('web', '172.30.0.1')));
  await s.source.start(s.emit);
  s.events.length = 0;
  await writeFile(s.path, '');
  await waitFor(() => s.records.some((r) => String(r.msg).startsWith('the file is empty')), 'the empty-file warning');
  t.deepEqual(s.events, []);
  await writeFile(s.path, 'apiVersion: v1\nkind: List\nitems: []\n');
  await waitFor(() => s.events.length >= 1, 'the deletion');
  t.deepEqual(s.events.map(describe), ['delete Service web']);
});

test('an unparseable file at start is a clear error naming the file', async (t) => {
  const s = await setup(t, '- just\n- a list\n');
  const err = await t.throwsAsync(s.source.start(s.emit));
  t.regex(err!.message, /cluster\.yaml: cannot parse: document 1: not a Kubernetes object/);
  t.deepEqual(s.events, []);
});

test('a missing file at start is an error', async (t) => {
  const source = new FileSource('/nonexistent/kproxy/cluster.yaml', silentLogger(), { watch: false });
  await t.throwsAsync(source.start(() => {}), { code: 'ENOENT' });
});

test('watch: false reads once and never again', async (t) => {
  const s = await setup(t, docs(svcDoc('web', '172.30.0.1')), false);
  await s.source.start(s.emit);
  await writeFile(s.path, docs(svcDoc('db', '172.30.0.2')));
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(s.events.map(describe), ['upsert Service web', 'Synced']);
});

test('the file feeds the tracker: an edit changes exactly one service port', async (t) => {
  const s = await setup(t, docs(svcDoc('web', '172.30.0.1'), sliceDoc('web', '10.0.0.1'), svcDoc('db', '172.30.0.2')));
  const tracker = new Tracker({ nodeName: 'node-a', families: [4] }, silentLogger());
  await s.source.start((e) => tracker.apply(e));
  t.true(tracker.synced());
  t.is(tracker.snapshot().state.services.size, 2);
  await writeFile(s.path, docs(svcDoc('web', '172.30.0.1'), sliceDoc('web', '10.0.0.1', '10.0.0.2'), svcDoc('db', '172.30.0.2')));
  await waitFor(() => tracker.pending() > 0, 'the tracker to see the edit');
  const { state, changes } = tracker.snapshot();
  t.deepEqual([...changes.services], ['4/default/web:http/TCP']);
  t.deepEqual(state.services.get('4/default/web:http/TCP')!.clusterEndpoints.map((e) => e.ip), ['10.0.0.1', '10.0.0.2']);
});

test('parseObjects: kind List and several documents, default namespace, other kinds ignored', async (t) => {
  const text = `apiVersion: v1
kind: List
items:
- ${svcDoc('a', '172.30.0.1').trimEnd().replaceAll('\n', '\n  ')}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: x}}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 172.30.0.2, ports: [{port: 1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: y}
---
`;
  const p = parseObjects(text);
  t.deepEqual(p.errors, []);
  t.deepEqual(p.services.map((s) => `${s.metadata?.namespace}/${s.metadata?.name}`), ['default/a', 'default/b']);
  t.deepEqual(p.ignored, ['ConfigMap x/c (v1)', 'Deployment y/d (apps/v1)']);
  const fixture = parseObjects(await readFile(clusterYaml, 'utf8'));
  t.is(fixture.errors.length, 0);
});

test('parseObjects: syntax errors and non-objects are reported per document', (t) => {
  const p = parseObjects('a: [1\n---\n42\n---\nkind: List\n');
  t.is(p.errors.length, 3);
  t.regex(p.errors[0], /^document 1: /);
  t.is(p.errors[1], 'document 2: not a Kubernetes object');
  t.is(p.errors[2], 'document 3: List has no items list');
});
