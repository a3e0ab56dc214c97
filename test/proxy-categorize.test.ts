// Endpoint categorisation through the real tracker, case by case after
// kube-proxy's CategorizeEndpoints: traffic policies, terminating fallback,
// topology hints and trafficDistribution.
import test from 'ava';
import type { V1Endpoint, V1ServiceSpec } from '@kubernetes/client-node';
import { endpoint as ep, eps, node, service, slice, trackerWith, type Meta } from './fixtures/proxy/objects.ts';

interface Case {
  name: string;
  spec?: Partial<V1ServiceSpec>;
  meta?: Meta;
  zone?: string;
  endpoints: V1Endpoint[];
  cluster: string[];
  local: string[];
  all?: string[];
  has: boolean;
}

const hinted = (ip: string, zone: string, extra = {}) => ep(ip, { node: zone === 'zone-a' ? 'node-a' : 'node-b', forZones: [zone], ...extra });
const auto: Meta = { annotations: { 'service.kubernetes.io/topology-mode': 'Auto' } };
const nodePort: Partial<V1ServiceSpec> = { type: 'NodePort', ports: [{ name: 'p', port: 80, nodePort: 30080, protocol: 'TCP' }] };

const cases: Case[] = [
  { name: 'no policy: every ready endpoint, not-ready left out',
    endpoints: [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' }), ep('10.0.0.3', { ready: false })],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: [], has: true },
  { name: 'ready nil counts as ready; serving nil follows ready',
    endpoints: [ep('10.0.0.1'), ep('10.0.0.2', { ready: false, terminating: true })],
    cluster: ['10.0.0.1:80'], local: [], has: true },
  { name: 'no ready endpoint: serving+terminating ones are the fallback',
    endpoints: [ep('10.0.0.1', { ready: false, serving: true, terminating: true }), ep('10.0.0.2', { ready: false, serving: false, terminating: true }), ep('10.0.0.3', { ready: false })],
    cluster: ['10.0.0.1:80 NS T'], local: [], has: true },
  { name: 'a ready endpoint wins over terminating ones',
    endpoints: [ep('10.0.0.1', { ready: false, serving: true, terminating: true }), ep('10.0.0.2')],
    cluster: ['10.0.0.2:80'], local: [], has: true },
  { name: 'only not-ready, not terminating: no endpoints (REJECT)',
    endpoints: [ep('10.0.0.1', { ready: false, serving: true })],
    cluster: [], local: [], has: false },
  { name: 'no endpoints at all', endpoints: [], cluster: [], local: [], has: false },

  { name: 'topology-mode Auto: only endpoints hinted for this zone',
    meta: auto, endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b'), hinted('10.0.0.3', 'zone-a')],
    cluster: ['10.0.0.1:80 L', '10.0.0.3:80 L'], local: [], has: true },
  { name: 'topology-mode auto (lower case) works too',
    meta: { annotations: { 'service.kubernetes.io/topology-mode': 'auto' } }, endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b')],
    cluster: ['10.0.0.1:80 L'], local: [], has: true },
  { name: 'older topology-aware-hints annotation',
    meta: { annotations: { 'service.kubernetes.io/topology-aware-hints': 'Auto' } }, endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b')],
    cluster: ['10.0.0.1:80 L'], local: [], has: true },
  { name: 'trafficDistribution PreferClose',
    spec: { trafficDistribution: 'PreferClose' }, endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b')],
    cluster: ['10.0.0.1:80 L'], local: [], has: true },
  { name: 'hints present but the Service asks for nothing: all endpoints',
    endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b')],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: [], has: true },
  { name: 'topology-mode Disabled: all endpoints',
    meta: { annotations: { 'service.kubernetes.io/topology-mode': 'Disabled' } }, endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b')],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: [], has: true },
  { name: 'a ready endpoint without hints: all endpoints',
    meta: auto, endpoints: [hinted('10.0.0.1', 'zone-a'), ep('10.0.0.2')],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: [], has: true },
  { name: 'a not-ready endpoint without hints does not disable topology',
    meta: auto, endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b'), ep('10.0.0.3', { ready: false })],
    cluster: ['10.0.0.1:80 L'], local: [], has: true },
  { name: 'no endpoint hinted for this zone: all endpoints',
    meta: auto, endpoints: [hinted('10.0.0.1', 'zone-b'), hinted('10.0.0.2', 'zone-c')],
    cluster: ['10.0.0.1:80', '10.0.0.2:80'], local: [], has: true },
  { name: 'node without a zone label: all endpoints',
    meta: auto, zone: '', endpoints: [hinted('10.0.0.1', 'zone-a'), hinted('10.0.0.2', 'zone-b')],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: [], has: true },
  { name: 'PreferSameNode: endpoints hinted for this node',
    spec: { trafficDistribution: 'PreferSameNode' },
    endpoints: [hinted('10.0.0.1', 'zone-a', { forNodes: ['node-a'] }), hinted('10.0.0.2', 'zone-a', { forNodes: ['node-x'] }), hinted('10.0.0.3', 'zone-b', { forNodes: ['node-b'] })],
    cluster: ['10.0.0.1:80 L'], local: [], has: true },
  { name: 'PreferSameNode with nothing for this node falls back to the zone',
    spec: { trafficDistribution: 'PreferSameNode' },
    endpoints: [hinted('10.0.0.1', 'zone-a', { forNodes: ['node-x'] }), hinted('10.0.0.2', 'zone-b', { forNodes: ['node-b'] })],
    cluster: ['10.0.0.1:80 L'], local: [], has: true },

  { name: 'internalTrafficPolicy Local: only this node\'s ready endpoints',
    spec: { internalTrafficPolicy: 'Local' }, endpoints: [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' })],
    cluster: [], local: ['10.0.0.1:80 L'], all: ['10.0.0.1:80 L'], has: true },
  { name: 'internalTrafficPolicy Local, none here: has endpoints, none usable (DROP)',
    spec: { internalTrafficPolicy: 'Local' }, endpoints: [ep('10.0.0.2', { node: 'node-b' })],
    cluster: [], local: [], has: true },
  { name: 'internalTrafficPolicy Local, local terminating fallback',
    spec: { internalTrafficPolicy: 'Local' },
    endpoints: [ep('10.0.0.1', { node: 'node-a', ready: false, serving: true, terminating: true }), ep('10.0.0.2', { node: 'node-b' })],
    cluster: [], local: ['10.0.0.1:80 L NS T'], all: ['10.0.0.1:80 L NS T'], has: true },
  { name: 'externalTrafficPolicy Local on a NodePort: cluster for internal, local for external',
    spec: { ...nodePort, externalTrafficPolicy: 'Local' }, endpoints: [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' })],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: ['10.0.0.1:80 L'], all: ['10.0.0.1:80 L', '10.0.0.2:80'], has: true },
  { name: 'externalTrafficPolicy Local, only a terminating local endpoint: union of both lists',
    spec: { ...nodePort, externalTrafficPolicy: 'Local' },
    endpoints: [ep('10.0.0.1', { node: 'node-a', ready: false, serving: true, terminating: true }), ep('10.0.0.2', { node: 'node-b' })],
    cluster: ['10.0.0.2:80'], local: ['10.0.0.1:80 L NS T'], all: ['10.0.0.2:80', '10.0.0.1:80 L NS T'], has: true },
  { name: 'externalTrafficPolicy Local with topology: the local endpoint out of zone is still reachable',
    spec: { ...nodePort, externalTrafficPolicy: 'Local' }, meta: auto,
    endpoints: [ep('10.0.0.1', { node: 'node-a', forZones: ['zone-b'] }), ep('10.0.0.2', { node: 'node-b', forZones: ['zone-a'] })],
    cluster: ['10.0.0.2:80'], local: ['10.0.0.1:80 L'], all: ['10.0.0.2:80', '10.0.0.1:80 L'], has: true },
  { name: 'externalTrafficPolicy Local on a plain ClusterIP Service is ignored',
    spec: { externalTrafficPolicy: 'Local' }, endpoints: [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' })],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: [], has: true },
  { name: 'both policies Local on a NodePort: cluster endpoints still needed for external short-circuit',
    spec: { ...nodePort, externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local' },
    endpoints: [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' })],
    cluster: ['10.0.0.1:80 L', '10.0.0.2:80'], local: ['10.0.0.1:80 L'], all: ['10.0.0.1:80 L', '10.0.0.2:80'], has: true },
];

for (const c of cases) {
  test(c.name, (t) => {
    const spec: V1ServiceSpec = { clusterIP: '172.30.0.1', ports: [{ name: 'p', port: 80, protocol: 'TCP' }], ...c.spec };
    const tracker = trackerWith([
      node('node-a', c.zone ?? 'zone-a'),
      service('svc', spec, c.meta),
      slice('svc', 'svc-1', [{ name: 'p', port: 80 }], c.endpoints),
    ]);
    const s = tracker.snapshot().state.services.get('4/default/svc:p/TCP');
    if (!s) return t.fail('service port missing');
    t.deepEqual(eps(s.clusterEndpoints), c.cluster, 'clusterEndpoints');
    t.deepEqual(eps(s.localEndpoints), c.local, 'localEndpoints');
    t.deepEqual(eps(s.allReachableEndpoints), c.all ?? c.cluster, 'allReachableEndpoints');
    t.is(s.hasEndpoints, c.has, 'hasEndpoints');
  });
}

test('slice ports match service ports by name and protocol', (t) => {
  const tracker = trackerWith([
    service('svc', { clusterIP: '172.30.0.1', ports: [
      { name: 'a', port: 80, protocol: 'TCP' }, { name: 'a', port: 80, protocol: 'UDP' }, { name: 'b', port: 81, protocol: 'TCP' },
    ] }),
    slice('svc', 'svc-1', [{ name: 'a', port: 8080, protocol: 'UDP' }, { name: 'c', port: 9090 }], [ep('10.0.0.1')]),
  ]);
  const st = tracker.snapshot().state.services;
  t.deepEqual(eps(st.get('4/default/svc:a/UDP')!.clusterEndpoints), ['10.0.0.1:8080']);
  t.deepEqual(eps(st.get('4/default/svc:a/TCP')!.clusterEndpoints), []);
  t.deepEqual(eps(st.get('4/default/svc:b/TCP')!.clusterEndpoints), []);
});

test('an address in two slices counts once, and the ready copy wins', (t) => {
  const tracker = trackerWith([
    service('svc', { clusterIP: '172.30.0.1', ports: [{ port: 80 }] }),
    slice('svc', 'svc-a', [{ port: 80 }], [ep('10.0.0.1', { ready: false }), ep('10.0.0.2')]),
    slice('svc', 'svc-b', [{ port: 80 }], [ep('10.0.0.1'), ep('10.0.0.2', { ready: false })]),
  ]);
  t.deepEqual(eps(tracker.snapshot().state.services.get('4/default/svc/TCP')!.clusterEndpoints), ['10.0.0.1:80', '10.0.0.2:80']);
});

test('slices of the other family, FQDN slices and unlabelled slices give nothing', (t) => {
  const unlabelled = slice('svc', 'svc-x', [{ port: 80 }], [ep('10.0.0.9')]);
  delete unlabelled.metadata!.labels;
  const tracker = trackerWith([
    service('svc', { clusterIP: '172.30.0.1', ports: [{ port: 80 }] }),
    slice('svc', 'svc-6', [{ port: 80 }], [ep('fd00::1')], { addressType: 'IPv6' }),
    { ...slice('svc', 'svc-f', [{ port: 80 }], []), addressType: 'FQDN', endpoints: [{ addresses: ['example.com'] }] },
    unlabelled,
    slice('svc', 'svc-4', [{ port: 80 }], [ep('10.0.0.1')]),
  ], { families: [4] });
  const st = tracker.snapshot().state.services;
  t.deepEqual([...st.keys()], ['4/default/svc/TCP']);
  t.deepEqual(eps(st.get('4/default/svc/TCP')!.clusterEndpoints), ['10.0.0.1:80']);
});

test('endpoints are ordered by address, whichever slice holds them', (t) => {
  const tracker = trackerWith([
    service('svc', { clusterIP: '172.30.0.1', ports: [{ port: 80 }] }),
    slice('svc', 'svc-b', [{ port: 80 }], [ep('10.0.0.10'), ep('10.0.0.9')]),
    slice('svc', 'svc-a', [{ port: 80 }], [ep('9.0.0.200'), ep('10.0.0.100')]),
  ]);
  t.deepEqual(eps(tracker.snapshot().state.services.get('4/default/svc/TCP')!.clusterEndpoints),
    ['9.0.0.200:80', '10.0.0.9:80', '10.0.0.10:80', '10.0.0.100:80']);
});

test('families: only those asked for are produced', (t) => {
  const objects = [
    service('svc', { clusterIP: '172.30.0.1', clusterIPs: ['172.30.0.1', 'fd00::1'], ports: [{ port: 80 }] }),
    slice('svc', 'svc-6', [{ port: 80 }], [ep('fd00:1::1')], { addressType: 'IPv6' }),
  ];
  t.deepEqual([...trackerWith(objects, { families: [6] }).snapshot().state.services.keys()], ['6/default/svc/TCP']);
  t.deepEqual([...trackerWith(objects, { families: [4, 6] }).snapshot().state.services.keys()].sort(), ['4/default/svc/TCP', '6/default/svc/TCP']);
  const ipv6only = trackerWith([service('v6', { clusterIP: 'fd00::2', ports: [{ port: 80 }] })], { families: [4, 6] });
  t.deepEqual([...ipv6only.snapshot().state.services.keys()], ['6/default/v6/TCP']);
});

test('a slice port without a number contributes no endpoints', (t) => {
  const s = slice('svc', 'svc-1', [{ port: 80 }], [ep('10.0.0.1')]);
  delete s.ports![0].port;
  const tracker = trackerWith([service('svc', { clusterIP: '172.30.0.1', ports: [{ port: 80 }] }), s]);
  const st = tracker.snapshot().state.services.get('4/default/svc/TCP')!;
  t.false(st.hasEndpoints);
  t.deepEqual(st.clusterEndpoints, []);
});
