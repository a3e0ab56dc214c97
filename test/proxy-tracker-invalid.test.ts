// The tracker's onInvalid hook: told of each skipped Service or EndpointSlice
// with its problems, once per distinct version, never again for the same one
// (a relist or file re-read), and a throwing hook changes nothing.
import test from 'ava';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { Tracker } from '../proxy/tracker.ts';
import type { InvalidObject } from '../proxy/tracker-api.ts';
import { validateService } from '../proxy/validate.ts';
import { endpoint, recordingLogger, service, slice, upserts } from './fixtures/proxy/objects.ts';

function tracked(onInvalid?: (i: InvalidObject) => void) {
  const { log, records } = recordingLogger();
  const seen: string[] = [];
  const tracker = new Tracker({
    nodeName: 'node-a', families: [4],
    onInvalid: onInvalid ?? ((i) => seen.push(`${i.kind} ${i.object.metadata?.namespace}/${i.object.metadata?.name}@${i.object.metadata?.resourceVersion ?? ''}: ${i.problems.join('; ')}`)),
  }, log);
  return { tracker, seen, records };
}

function versioned<T extends V1Service | V1EndpointSlice>(obj: T, rv: string): T {
  return { ...obj, metadata: { ...obj.metadata, uid: `uid-${obj.metadata?.name}`, resourceVersion: rv } };
}

const broken = (rv: string, port = 70000) => versioned(service('web', { clusterIP: '172.30.0.1', ports: [{ name: 'http', port, protocol: 'ICMP' }] }), rv);
const fine = (rv: string) => versioned(service('web', { clusterIP: '172.30.0.1', ports: [{ name: 'http', port: 80 }] }), rv);
const brokenSlice = (rv: string) => versioned(slice('web', 'web-1', [{ name: 'http', port: 8080 }], [endpoint('10.0.0.x')]), rv);

test('onInvalid: once per version, every problem, not again on a relist of the same version', (t) => {
  const { tracker, seen, records } = tracked();
  for (const e of upserts(broken('5'), brokenSlice('6'))) tracker.apply(e);
  // A relist brings the same versions again.
  for (const e of upserts(broken('5'), brokenSlice('6'))) tracker.apply(e);
  t.deepEqual(seen, [
    `Service default/web@5: ${validateService(broken('5')).join('; ')}`,
    'EndpointSlice default/web-1@6: endpoints[0].addresses[0] "10.0.0.x" is not an IPv4 address',
  ]);
  t.is(validateService(broken('5')).length, 2, 'port and protocol both named');
  t.is(records.filter((r) => r.level === 40 && /invalid .* skipped/.test(String(r.msg))).length, 2, 'warned once each');
  t.is(records.filter((r) => r.level === 20 && /skipped again/.test(String(r.msg))).length, 2, 'repeats at debug');

  tracker.apply(upserts(broken('7'))[0]);
  t.is(seen.length, 3, 'a new version, still broken, is reported again');
  t.regex(seen[2], /@7:/);
});

test('onInvalid: a fixed object that breaks again, or is deleted and re-created, is reported again', (t) => {
  const { tracker, seen } = tracked();
  tracker.apply(upserts(broken('5'))[0]);
  tracker.apply(upserts(fine('6'))[0]);
  t.deepEqual([...tracker.snapshot().state.services.keys()], ['4/default/web:http/TCP']);
  tracker.apply(upserts(broken('5'))[0]); // same version and problems as the first, but after a good one
  t.is(seen.length, 2);
  tracker.apply({ kind: 'Service', type: 'delete', object: fine('8') });
  tracker.apply(upserts(broken('5'))[0]);
  t.is(seen.length, 3);
  t.is(tracker.snapshot().state.services.size, 0, 'never proxied while broken after the delete');
});

test('onInvalid: valid objects are not reported; a throwing hook is logged and tracking goes on', (t) => {
  let calls = 0;
  const { tracker, records } = tracked(() => {
    calls++;
    throw new Error('hook bug');
  });
  tracker.apply(upserts(fine('1'))[0]);
  t.is(calls, 0);
  tracker.apply(upserts(broken('2'))[0]);
  t.is(calls, 1);
  t.true(records.some((r) => r.level === 40 && r.msg === 'onInvalid hook failed'));
  tracker.apply(upserts(versioned(service('db', { clusterIP: '172.30.0.2', ports: [{ port: 5432 }] }), '3'))[0]);
  t.deepEqual([...tracker.snapshot().state.services.keys()].sort(), ['4/default/db/TCP', '4/default/web:http/TCP']);
});

test('onInvalid is optional: a tracker without it skips and logs as before', (t) => {
  const { log, records } = recordingLogger();
  const tracker = new Tracker({ nodeName: 'node-a', families: [4] }, log);
  tracker.apply(upserts(broken('5'))[0]);
  t.is(tracker.snapshot().state.services.size, 0);
  t.like(records.find((r) => r.level === 40), { kind: 'Service', object: 'default/web', msg: 'invalid Service skipped' });
});

test('a protocol the mode does not serve: its ports are refused and reported once per version, the others proxied', (t) => {
  const { log, records } = recordingLogger();
  const seen: InvalidObject[] = [];
  const tracker = new Tracker({ nodeName: 'node-a', families: [4], onInvalid: (i) => seen.push(i), unservedProtocols: { mode: 'userspace', protocols: ['SCTP'] } }, log);
  const mixed = (rv: string) => versioned(service('mixed', { clusterIP: '172.30.0.2', ports: [{ name: 'http', port: 80 }, { name: 'sig', port: 9999, protocol: 'SCTP' }] }), rv);
  const only = versioned(service('sig-only', { clusterIP: '172.30.0.3', ports: [{ name: 'sig', port: 9999, protocol: 'SCTP' }] }), '3');
  for (const e of upserts(mixed('1'), only)) tracker.apply(e);
  const { state } = tracker.snapshot();
  t.deepEqual([...state.services.values()].map((s) => `${s.name}/${s.protocol}`), ['default/mixed:http/TCP']);
  t.deepEqual(seen.map((i) => [i.object.metadata?.name, i.action, i.problems]), [
    ['mixed', 'refuse', ['port sig/SCTP: the userspace mode does not serve SCTP']],
    ['sig-only', 'refuse', ['port sig/SCTP: the userspace mode does not serve SCTP']],
  ]);
  // The same versions again (a relist): nothing new is said.
  for (const e of upserts(mixed('1'), only)) tracker.apply(e);
  tracker.snapshot();
  t.is(seen.length, 2);
  t.is(records.filter((r) => r.level === 40 && /part of a Service refused/.test(String(r.msg))).length, 2, 'logged once per Service');
});
