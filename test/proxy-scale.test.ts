// The tracker at 10,000 Services × 10 endpoints: correct counts and
// change sets (timings are measured by test/fixtures/proxy/measure-tracker.ts,
// not asserted here).
import test from 'ava';
import { silentLogger } from '../lib/log.ts';
import { SnapshotMapBuilder } from '../proxy/snapshot-map.ts';
import { Tracker } from '../proxy/tracker.ts';
import { syntheticCluster, syntheticSlice } from './fixtures/proxy/synthetic.ts';

test('10,000 Services: every port built, one slice change is one changed port, earlier snapshots stay intact', (t) => {
  const { node, services, slices } = syntheticCluster({ services: 10_000, endpointsPerService: 10 });
  const tracker = new Tracker({ nodeName: 'node-a', families: [4] }, silentLogger());
  tracker.apply({ kind: 'Node', type: 'upsert', object: node });
  for (const object of services) tracker.apply({ kind: 'Service', type: 'upsert', object });
  for (const object of slices) tracker.apply({ kind: 'EndpointSlice', type: 'upsert', object });
  const first = tracker.snapshot();
  t.is(first.state.services.size, 10_000);
  t.is(first.changes.services.size, 10_000);
  let local = 0;
  for (const s of first.state.services.values()) {
    t.is(s.clusterEndpoints.length, 10);
    local += s.clusterEndpoints.filter((e) => e.isLocal).length;
  }
  t.is(local, 10_000);

  tracker.apply({ kind: 'EndpointSlice', type: 'upsert', object: syntheticSlice(4242, 10, 7) });
  const second = tracker.snapshot();
  t.deepEqual([...second.changes.services], ['4/bench/svc-4242:http/TCP']);
  t.not(second.state.services.get('4/bench/svc-4242:http/TCP'), first.state.services.get('4/bench/svc-4242:http/TCP'));
  t.is(first.state.services.get('4/bench/svc-4242:http/TCP')!.clusterEndpoints[0].ip, '10.16.146.1');
  t.is(second.state.services.get('4/bench/svc-4242:http/TCP')!.clusterEndpoints[0].ip, '10.16.146.8');
  t.is(second.state.services.get('4/bench/svc-4242:http/TCP')!.clusterEndpoints[9].ip, '10.16.146.17');

  // A new zone recomputes every Service; none uses topology, so nothing changes.
  tracker.apply({ kind: 'Node', type: 'upsert', object: { ...node, metadata: { ...node.metadata, labels: { 'topology.kubernetes.io/zone': 'zone-b' } } } });
  t.is(tracker.pending(), 10_000);
  t.is(tracker.snapshot().changes.services.size, 0);
});

test('snapshot map: published maps never change; reads see every entry once', (t) => {
  const b = new SnapshotMapBuilder<number>();
  for (let i = 0; i < 5000; i++) b.set(`k${i}`, i);
  const one = b.publish();
  b.set('k1', -1);
  b.delete('k2');
  b.set('new', 42);
  t.false(b.delete('absent'));
  const two = b.publish();
  t.is(one.size, 5000);
  t.is(one.get('k1'), 1);
  t.true(one.has('k2'));
  t.false(one.has('new'));
  t.is(two.size, 5000);
  t.is(two.get('k1'), -1);
  t.false(two.has('k2'));
  t.is(two.get('new'), 42);
  t.is(new Set(two.keys()).size, 5000);
  t.is([...one.entries()].reduce((sum, [, v]) => sum + v, 0), (4999 * 5000) / 2);
  t.deepEqual(new Map(two).get('new'), 42);
  let n = 0;
  two.forEach(() => n++);
  t.is(n, 5000);
});
