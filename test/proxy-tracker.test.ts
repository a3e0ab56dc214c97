// Tracker bookkeeping: what a snapshot reports as changed, change
// cancellation, incremental recompute, full syncs, pending and synced.
import test from 'ava';
import { endpoint as ep, newTracker, node, recordingLogger, service, slice, trackerWith, upserts } from './fixtures/proxy/objects.ts';
import { Tracker } from '../proxy/tracker.ts';

const web = (ip = '172.30.0.1', extra = {}) => service('web', { clusterIP: ip, ports: [{ name: 'http', port: 80 }], ...extra });
const webSlice = (...ips: string[]) => slice('web', 'web-1', [{ name: 'http', port: 8080 }], ips.map((i) => ep(i)));
const db = () => service('db', { clusterIP: '172.30.0.2', ports: [{ port: 5432 }] });
const WEB = '4/default/web:http/TCP';
const DB = '4/default/db/TCP';

test('first snapshot is full; the next one with no events is empty', (t) => {
  const tr = trackerWith([web(), webSlice('10.0.0.1'), db()]);
  const first = tr.snapshot();
  t.true(first.changes.full);
  t.deepEqual([...first.changes.services].sort(), [DB, WEB]);
  const second = tr.snapshot();
  t.false(second.changes.full);
  t.is(second.changes.services.size, 0);
  t.is(second.state.services.size, 2);
});

test('an endpoint change reports only that service port', (t) => {
  const tr = trackerWith([web(), webSlice('10.0.0.1'), db()]);
  const before = tr.snapshot().state;
  tr.apply(upserts(webSlice('10.0.0.1', '10.0.0.2'))[0]);
  const { state, changes } = tr.snapshot();
  t.false(changes.full);
  t.deepEqual([...changes.services], [WEB]);
  t.is(state.services.get(WEB)!.clusterEndpoints.length, 2);
  t.is(state.services.get(DB), before.services.get(DB), 'unchanged ports keep their object');
  t.is(before.services.get(WEB)!.clusterEndpoints.length, 1, 'an earlier snapshot never changes');
});

test('a Service updated and reverted between snapshots is not a change', (t) => {
  const tr = trackerWith([web(), webSlice('10.0.0.1')]);
  tr.snapshot();
  tr.apply(upserts(web('172.30.0.9'))[0]);
  tr.apply(upserts(webSlice('10.0.0.1', '10.0.0.5'))[0]);
  tr.apply(upserts(web())[0]);
  tr.apply(upserts(webSlice('10.0.0.1'))[0]);
  t.true(tr.pending() > 0);
  const { changes } = tr.snapshot();
  t.is(changes.services.size, 0);
  t.deepEqual(changes.staleUdpEndpoints, []);
});

test('a Service added and deleted between snapshots is not a change', (t) => {
  const tr = trackerWith([web()]);
  tr.snapshot();
  tr.apply(upserts(db())[0]);
  tr.apply({ kind: 'Service', type: 'delete', object: db() });
  t.is(tr.snapshot().changes.services.size, 0);
});

test('deleting a Service removes its ports and reports their keys', (t) => {
  const tr = trackerWith([web(), webSlice('10.0.0.1'), db()]);
  tr.snapshot();
  tr.apply({ kind: 'Service', type: 'delete', object: web() });
  const { state, changes } = tr.snapshot();
  t.deepEqual([...changes.services], [WEB]);
  t.false(state.services.has(WEB));
  t.true(state.services.has(DB));
});

test('removing a port and renaming one reports old and new keys', (t) => {
  const tr = trackerWith([service('m', { clusterIP: '172.30.0.3', ports: [{ name: 'a', port: 1 }, { name: 'b', port: 2 }] })]);
  tr.snapshot();
  tr.apply(upserts(service('m', { clusterIP: '172.30.0.3', ports: [{ name: 'c', port: 1 }] }))[0]);
  const { state, changes } = tr.snapshot();
  t.deepEqual([...changes.services].sort(), ['4/default/m:a/TCP', '4/default/m:b/TCP', '4/default/m:c/TCP']);
  t.deepEqual([...state.services.keys()], ['4/default/m:c/TCP']);
});

test('deleting a slice, and a slice moving to another Service, update both Services', (t) => {
  const tr = trackerWith([web(), webSlice('10.0.0.1'), db()]);
  tr.snapshot();
  const moved = slice('db', 'web-1', [{ port: 5432 }], [ep('10.0.0.7')]);
  tr.apply(upserts(moved)[0]);
  let { state, changes } = tr.snapshot();
  t.deepEqual([...changes.services].sort(), [DB, WEB]);
  t.false(state.services.get(WEB)!.hasEndpoints);
  t.is(state.services.get(DB)!.clusterEndpoints[0].ip, '10.0.0.7');
  tr.apply({ kind: 'EndpointSlice', type: 'delete', object: moved });
  ({ state, changes } = tr.snapshot());
  t.deepEqual([...changes.services], [DB]);
  t.false(state.services.get(DB)!.hasEndpoints);
});

test('slices arriving before their Service are used once it comes', (t) => {
  const tr = trackerWith([webSlice('10.0.0.1')]);
  t.is(tr.snapshot().state.services.size, 0);
  tr.apply(upserts(web())[0]);
  t.is(tr.snapshot().state.services.get(WEB)!.clusterEndpoints.length, 1);
});

test('only Services with events are recomputed; a Node label change recomputes all', (t) => {
  const svc = web();
  const tr = trackerWith([node('node-a', 'zone-a'), svc, db()]);
  tr.snapshot();
  // Changed behind the tracker's back: invisible until something marks it dirty.
  svc.spec!.ports![0].port = 81;
  tr.apply(upserts(db())[0]);
  let snap = tr.snapshot();
  t.is(snap.changes.services.size, 0);
  t.is(snap.state.services.get(WEB)!.port, 80);
  tr.apply(upserts(node('node-a', 'zone-b'))[0]);
  t.is(tr.pending(), 2);
  snap = tr.snapshot();
  t.deepEqual([...snap.changes.services], [WEB]);
  t.is(snap.state.services.get(WEB)!.port, 81);
  t.false(snap.changes.full);
});

test('an unchanged Node is not a change; other Nodes are ignored', (t) => {
  const tr = trackerWith([node('node-a', 'zone-a'), web()]);
  tr.snapshot();
  tr.apply(upserts(node('node-a', 'zone-a'))[0]);
  tr.apply(upserts(node('node-b', 'zone-b', ['192.168.0.3']))[0]);
  const { state, changes } = tr.snapshot();
  t.is(changes.services.size, 0);
  t.false(changes.full);
  t.deepEqual(state.nodeIPs, ['192.168.0.2']);
});

test('new node addresses make the next snapshot full', (t) => {
  const tr = trackerWith([node('node-a', 'zone-a'), web()]);
  tr.snapshot();
  tr.apply(upserts(node('node-a', 'zone-a', ['192.168.0.2', '10.1.1.1']))[0]);
  const { state, changes } = tr.snapshot();
  t.true(changes.full);
  t.deepEqual([...changes.services], [WEB]);
  t.deepEqual(state.nodeIPs, ['192.168.0.2', '10.1.1.1']);
});

test('requestFull makes exactly the next snapshot full', (t) => {
  const tr = trackerWith([web(), db()]);
  tr.snapshot();
  tr.requestFull();
  const full = tr.snapshot().changes;
  t.true(full.full);
  t.deepEqual([...full.services].sort(), [DB, WEB]);
  t.false(tr.snapshot().changes.full);
});

test('synced follows the Synced event; pending counts dirty service ports', (t) => {
  const tr = newTracker();
  t.false(tr.synced());
  t.is(tr.pending(), 0);
  tr.apply(upserts(service('m', { clusterIP: '172.30.0.3', ports: [{ name: 'a', port: 1 }, { name: 'b', port: 2 }] }))[0]);
  tr.apply(upserts(web())[0]);
  t.is(tr.pending(), 3);
  tr.apply({ kind: 'Synced' });
  t.true(tr.synced());
  tr.snapshot();
  t.is(tr.pending(), 0);
});

test('deleting this Node drops its zone and addresses (full sync) and is logged', (t) => {
  const zonal = service('z', { clusterIP: '172.30.0.4', ports: [{ port: 80 }] }, { annotations: { 'service.kubernetes.io/topology-mode': 'Auto' } });
  const zs = slice('z', 'z-1', [{ port: 80 }], [ep('10.0.0.1', { forZones: ['zone-a'] }), ep('10.0.0.2', { forZones: ['zone-b'] })]);
  const tr = trackerWith([node('node-a', 'zone-a'), zonal, zs]);
  t.is(tr.snapshot().state.services.get('4/default/z/TCP')!.clusterEndpoints.length, 1);
  tr.apply({ kind: 'Node', type: 'delete', object: node('node-a', 'zone-a') });
  const { state, changes } = tr.snapshot();
  t.true(changes.full);
  t.deepEqual(state.nodeIPs, []);
  t.is(state.services.get('4/default/z/TCP')!.clusterEndpoints.length, 2, 'without a zone every endpoint is used');
});

test('a Service address of a family not programmed is warned about once', (t) => {
  const { log, records } = recordingLogger();
  const tracker = new Tracker({ nodeName: 'node-a', families: [4] }, log);
  const svc = {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'dual', namespace: 'default' },
    spec: { clusterIP: '172.30.0.9', clusterIPs: ['172.30.0.9', 'fd00:30::9'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
  };
  tracker.apply({ kind: 'Service', type: 'upsert', object: svc });
  tracker.apply({ kind: 'Synced' });
  const first = tracker.snapshot();
  tracker.apply({ kind: 'Service', type: 'upsert', object: { ...svc, metadata: { ...svc.metadata, labels: { a: 'b' } } } });
  tracker.snapshot();
  const warned = records.filter((r) => String(r.msg).startsWith('Service address of an IP family'));
  t.is(warned.length, 1);
  t.deepEqual(warned[0].addresses, ['fd00:30::9']);
  t.deepEqual([...first.state.services.values()].map((s) => s.clusterIP), ['172.30.0.9']);
});
