// Which worker opens which listener: all of them everywhere when the
// open-file limit allows, fewer copies when not, and every listener of a
// Service port with ClientIP affinity in one worker.
import test from 'ava';
import { placeListeners, replicasFor, openFileLimit } from '../modes/userspace/placement.ts';
import type { ForwarderTable, ListenerSpec } from '../modes/userspace/table.ts';

const l = (i: number, over: Partial<ListenerSpec> = {}): ListenerSpec => ({
  ip: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: 'TCP', service: `ns/svc${i}:http`, algorithm: 'rr', affinitySeconds: 0, sourceRanges: [],
  remote: { endpoints: [], whenEmpty: 'reject' }, ...over,
});
const table = (listeners: ListenerSpec[]): ForwarderTable => ({ clusterSources: [], listeners });

test('every worker opens every listener while the budget allows', (t) => {
  const tab = table(Array.from({ length: 100 }, (_, i) => l(i)));
  const parts = placeListeners(tab, 2, 1000);
  t.is(parts.length, 2);
  for (const p of parts) t.is(p.listeners.length, 100);
});

test('over the budget each listener goes to fewer workers, the same ones every time', (t) => {
  t.is(replicasFor(20_000, 2, 12_000), 1);
  t.is(replicasFor(20_000, 4, 12_000), 2);
  t.is(replicasFor(100, 4, 12_000), 4);
  const tab = table(Array.from({ length: 3000 }, (_, i) => l(i)));
  const parts = placeListeners(tab, 2, 2000);
  t.is(parts[0].listeners.length + parts[1].listeners.length, 3000);
  t.true(Math.abs(parts[0].listeners.length - parts[1].listeners.length) < 300);
  const again = placeListeners(table([...tab.listeners].reverse()), 2, 2000);
  t.deepEqual(again[0].listeners.map((x) => x.ip).sort(), parts[0].listeners.map((x) => x.ip).sort());
});

test('listeners of a Service port with affinity share one worker', (t) => {
  const sticky = [l(1, { affinitySeconds: 10800, service: 'ns/sticky:http' }), l(2, { affinitySeconds: 10800, service: 'ns/sticky:http', port: 30080 })];
  const parts = placeListeners(table([...sticky, l(3)]), 2, 1000);
  const holders = parts.filter((p) => p.listeners.some((x) => x.service === 'ns/sticky:http'));
  t.is(holders.length, 1);
  t.is(holders[0].listeners.filter((x) => x.service === 'ns/sticky:http').length, 2);
  for (const p of parts) t.true(p.listeners.some((x) => x.service === 'ns/svc3:http'), 'others everywhere');
});

test('the open-file limit is read from /proc', (t) => {
  t.true(openFileLimit() >= 1024);
});
