// The shared fixture cluster.yaml through the real tracker: one row per
// Service feature, asserting the NodeState node-a should see.
import test from 'ava';
import type { ServicePortState } from '../proxy/model.ts';
import { eps, loadCluster, trackerWith } from './fixtures/proxy/objects.ts';

const parsed = loadCluster();
const tracker = trackerWith([...parsed.nodes, ...parsed.services, ...parsed.slices]);
const { state, changes } = tracker.snapshot();

test('fixture parses cleanly and ignores other kinds', (t) => {
  t.deepEqual(parsed.errors, []);
  t.deepEqual(parsed.ignored, ['ConfigMap default/unrelated (v1)']);
  t.is(parsed.nodes.length, 2);
  t.is(parsed.services.length, 17);
  t.is(parsed.slices.length, 15);
});

test('node-a: addresses from InternalIP/ExternalIP only, and the first snapshot is full', (t) => {
  t.is(state.nodeName, 'node-a');
  t.deepEqual(state.nodeIPs, ['192.168.0.2', 'fd00::2']);
  t.true(changes.full);
  t.deepEqual([...changes.services].sort(), [...state.services.keys()].sort());
});

test('not proxied: headless, ExternalName, another proxy\'s Service, no IPv6 for single-stack', (t) => {
  const names = new Set([...state.services.values()].map((s) => s.serviceName));
  for (const skipped of ['headless', 'external-name', 'other-proxy']) t.false(names.has(skipped), skipped);
  t.deepEqual([...state.services.keys()].filter((k) => k.startsWith('6/')), ['6/default/dual:http/TCP']);
  t.is(state.services.size, 16);
});

type Row = [key: string, expect: Partial<Record<keyof ServicePortState, unknown>>];
const rows: Row[] = [
  ['4/default/web:http/TCP', {
    clusterIP: '172.30.0.41', port: 80, nodePort: 0, portName: 'http', namespace: 'default', serviceName: 'web',
    clusterEndpoints: ['10.180.0.4:8080 L', '10.180.1.5:8080'], localEndpoints: [],
    allReachableEndpoints: ['10.180.0.4:8080 L', '10.180.1.5:8080'], hasEndpoints: true,
  }],
  ['4/kube-system/kube-dns:dns/UDP', { clusterIP: '172.30.0.10', port: 53, protocol: 'UDP', clusterEndpoints: ['10.180.0.10:53 L', '10.180.1.10:53'] }],
  ['4/kube-system/kube-dns:dns-tcp/TCP', { clusterIP: '172.30.0.10', port: 53, protocol: 'TCP', clusterEndpoints: ['10.180.0.10:53 L', '10.180.1.10:53'] }],
  ['4/default/np-local:http/TCP', {
    nodePort: 30080, externalPolicyLocal: true, healthCheckNodePort: 0,
    clusterEndpoints: ['10.180.0.7:8080 L', '10.180.1.7:8080'], localEndpoints: ['10.180.0.7:8080 L'],
    allReachableEndpoints: ['10.180.0.7:8080 L', '10.180.1.7:8080'], hasEndpoints: true,
  }],
  ['4/default/lb:https/TCP', {
    nodePort: 30443, loadBalancerIPs: ['203.0.113.10'], loadBalancerSourceRanges: ['198.51.100.0/24'],
    externalPolicyLocal: true, healthCheckNodePort: 30256,
    clusterEndpoints: ['10.180.1.8:8443'], localEndpoints: [], hasEndpoints: true,
  }],
  ['4/default/lb-legacy/TCP', {
    portName: '', name: 'default/lb-legacy', loadBalancerIPs: ['203.0.113.20'],
    loadBalancerSourceRanges: ['192.0.2.0/24', '198.51.100.7/32'], externalPolicyLocal: false,
  }],
  ['4/default/ext:http/TCP', { externalIPs: ['192.0.2.50'], affinityTimeoutSeconds: 600, externalPolicyLocal: false }],
  ['4/default/sticky-sctp:sctp/SCTP', { protocol: 'SCTP', affinityTimeoutSeconds: 10800, port: 9999 }],
  ['4/default/itp-local:http/TCP', {
    internalPolicyLocal: true, clusterEndpoints: [], localEndpoints: [], allReachableEndpoints: [], hasEndpoints: true,
  }],
  ['4/default/zonal:http/TCP', { clusterEndpoints: ['10.180.0.14:80 L', '10.180.2.14:80'] }],
  ['4/default/prefer-close:http/TCP', { clusterEndpoints: ['10.180.1.15:80', '10.180.2.15:80'] }],
  ['4/default/draining:udp/UDP', { clusterEndpoints: ['10.180.1.16:5000 NS T'], hasEndpoints: true }],
  ['4/default/empty:http/TCP', { clusterEndpoints: [], allReachableEndpoints: [], hasEndpoints: false }],
  ['4/default/dual:http/TCP', { family: 4, clusterIP: '172.30.0.52', clusterEndpoints: ['10.180.0.17:80 L'] }],
  ['6/default/dual:http/TCP', { family: 6, clusterIP: 'fd00:30::52', clusterEndpoints: ['fd00:10:180::17:80 L'] }],
  ['4/default/multi-slice/TCP', { clusterEndpoints: ['10.180.1.18:80', '10.180.1.19:80', '10.180.2.20:80'] }],
];

for (const [key, expect] of rows) {
  test(`fixture ${key}`, (t) => {
    const s = state.services.get(key);
    if (!s) return t.fail(`no service port ${key}; have ${[...state.services.keys()].join(', ')}`);
    t.is(s.key, key);
    for (const [field, want] of Object.entries(expect)) {
      const got = (s as unknown as Record<string, unknown>)[field];
      const shown = Array.isArray(got) && field.endsWith('Endpoints') ? eps(got as ServicePortState['clusterEndpoints']) : got;
      t.deepEqual(shown, want, field);
    }
  });
}

test('endpoint zone is carried for explain/dump', (t) => {
  const web = state.services.get('4/default/web:http/TCP')!;
  t.deepEqual(web.clusterEndpoints.map((e) => e.zone), ['zone-a', 'zone-b']);
});

test('trigger times come from the slice annotation, else the arrival time', (t) => {
  const fresh = trackerWith([...parsed.services, ...parsed.slices]);
  const before = Date.now();
  const { triggerTimes } = fresh.snapshot();
  t.is(triggerTimes.length, parsed.services.length + parsed.slices.length);
  t.true(triggerTimes.includes(Date.parse('2026-01-01T00:00:00Z')));
  t.true(triggerTimes.filter((x) => x !== Date.parse('2026-01-01T00:00:00Z')).every((x) => x <= before && x > before - 60_000));
  t.deepEqual(fresh.snapshot().triggerTimes, []);
});
