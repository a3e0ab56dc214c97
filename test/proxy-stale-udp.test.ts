// Stale UDP conntrack reported in Changes (after kube-proxy's
// detectStaleConntrackEntries): endpoints no longer reachable, and service
// addresses that went from no endpoints to some.
import test from 'ava';
import type { V1Endpoint } from '@kubernetes/client-node';
import { endpoint as ep, service, slice, trackerWith, upserts } from './fixtures/proxy/objects.ts';

const dnsSpec = (extra = {}) => ({
  type: 'LoadBalancer', clusterIP: '172.30.0.10',
  externalIPs: ['192.0.2.1'],
  ports: [{ name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 }, { name: 'tcp', port: 53, protocol: 'TCP', nodePort: 30054 }],
  ...extra,
});
const status = { loadBalancer: { ingress: [{ ip: '203.0.113.1' }] } };
const dns = (extra = {}) => service('dns', dnsSpec(extra), { status });
const dnsSlice = (...endpoints: V1Endpoint[]) =>
  slice('dns', 'dns-1', [{ name: 'dns', port: 5353, protocol: 'UDP' }, { name: 'tcp', port: 5353, protocol: 'TCP' }], endpoints);
const ips = ['172.30.0.10', '192.0.2.1', '203.0.113.1'];

function changesAfter(before: unknown[], after: unknown[]) {
  const tr = trackerWith(before as never[], { families: [4] });
  tr.snapshot();
  for (const e of upserts(...(after as never[]))) tr.apply(e);
  return tr.snapshot().changes;
}

test('a new UDP service port with endpoints clears flows cached against its addresses and NodePort', (t) => {
  const tr = trackerWith([dns(), dnsSlice(ep('10.0.0.1'))], { families: [4] });
  const { staleUdpServiceIPs, staleUdpEndpoints } = tr.snapshot().changes;
  t.deepEqual(staleUdpServiceIPs, ips.map((ip) => ({ family: 4, ip, port: 53, nodePort: 30053 })));
  t.deepEqual(staleUdpEndpoints, []);
});

test('no endpoints to some: every service address of the UDP port, none for TCP', (t) => {
  const c = changesAfter([dns(), dnsSlice()], [dnsSlice(ep('10.0.0.1'))]);
  t.deepEqual(c.staleUdpServiceIPs, ips.map((ip) => ({ family: 4, ip, port: 53, nodePort: 30053 })));
  t.deepEqual(c.staleUdpEndpoints, []);
});

test('only not-ready endpoints count as none', (t) => {
  const c = changesAfter([dns(), dnsSlice(ep('10.0.0.1', { ready: false }))], [dnsSlice(ep('10.0.0.1'))]);
  t.is(c.staleUdpServiceIPs.length, 3);
});

test('an endpoint that goes away: its flows through every service address and the NodePort', (t) => {
  const c = changesAfter([dns(), dnsSlice(ep('10.0.0.1'), ep('10.0.0.2'))], [dnsSlice(ep('10.0.0.1'))]);
  t.deepEqual(c.staleUdpEndpoints, [{ family: 4, serviceIPs: ips, servicePort: 53, nodePort: 30053, endpointIP: '10.0.0.2', endpointPort: 5353 }]);
  t.deepEqual(c.staleUdpServiceIPs, []);
});

test('an endpoint that stops being ready is stale; one still reachable as terminating fallback is not', (t) => {
  const notReady = changesAfter([dns(), dnsSlice(ep('10.0.0.1'), ep('10.0.0.2'))],
    [dnsSlice(ep('10.0.0.1'), ep('10.0.0.2', { ready: false, serving: true, terminating: true }))]);
  t.deepEqual(notReady.staleUdpEndpoints.map((s) => s.endpointIP), ['10.0.0.2']);
  const fallback = changesAfter([dns(), dnsSlice(ep('10.0.0.2'))],
    [dnsSlice(ep('10.0.0.2', { ready: false, serving: true, terminating: true }))]);
  t.deepEqual(fallback.staleUdpEndpoints, []);
  t.deepEqual([...fallback.services], ['4/default/dns:dns/UDP', '4/default/dns:tcp/TCP']);
});

test('a deleted Service: every endpoint of its UDP ports is stale', (t) => {
  const tr = trackerWith([dns(), dnsSlice(ep('10.0.0.1'))], { families: [4] });
  tr.snapshot();
  tr.apply({ kind: 'Service', type: 'delete', object: dns() });
  const c = tr.snapshot().changes;
  t.deepEqual(c.staleUdpEndpoints, [{ family: 4, serviceIPs: ips, servicePort: 53, nodePort: 30053, endpointIP: '10.0.0.1', endpointPort: 5353 }]);
});

test('an address removed from the Service: flows through that address only', (t) => {
  const c = changesAfter([dns(), dnsSlice(ep('10.0.0.1'))], [dns({ externalIPs: [] })]);
  t.deepEqual(c.staleUdpEndpoints, [{ family: 4, serviceIPs: ['192.0.2.1'], servicePort: 53, nodePort: 0, endpointIP: '10.0.0.1', endpointPort: 5353 }]);
});

test('a changed NodePort: flows through the old NodePort', (t) => {
  const c = changesAfter([dns(), dnsSlice(ep('10.0.0.1'))],
    [dns({ ports: [{ name: 'dns', port: 53, protocol: 'UDP', nodePort: 30099 }, { name: 'tcp', port: 53, protocol: 'TCP', nodePort: 30054 }] })]);
  t.deepEqual(c.staleUdpEndpoints, [{ family: 4, serviceIPs: [], servicePort: 53, nodePort: 30053, endpointIP: '10.0.0.1', endpointPort: 5353 }]);
});

test('TCP and SCTP never report stale conntrack', (t) => {
  const svc = service('t', { clusterIP: '172.30.0.5', ports: [{ name: 'a', port: 1, protocol: 'TCP' }, { name: 'b', port: 2, protocol: 'SCTP' }] });
  const sl = (...e: V1Endpoint[]) => slice('t', 't-1', [{ name: 'a', port: 1, protocol: 'TCP' }, { name: 'b', port: 2, protocol: 'SCTP' }], e);
  const c = changesAfter([svc, sl(ep('10.0.0.1'), ep('10.0.0.2'))], [sl(ep('10.0.0.2'), ep('10.0.0.3'))]);
  t.is(c.services.size, 2);
  t.deepEqual(c.staleUdpEndpoints, []);
  t.deepEqual(c.staleUdpServiceIPs, []);
});
