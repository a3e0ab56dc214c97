// Behaviour through the packet tracer: what happens to a new connection,
// whatever the exact rules look like. Rules go through the real backend
// code into the fake kernel (its Exec), as a sync would apply them. The
// probabilities of the statistic rules are checked here; the behaviour
// every mode shares is in behaviour.test.ts.
import test from 'ava';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { FakeKernel } from '../modes/iptables/fake-kernel.ts';
import type { TraceOutcome, TracePacket } from '../modes/iptables/tracer.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { byId, nodeIP, nodeIP6, podClient, stateOf, type Scenario } from './fixtures/services.ts';
import { nodeState, withPort } from './helpers/state.ts';
import { syncBackend } from '../modes/sync.ts';

async function load(id: string, change?: (s: ServicePortState) => ServicePortState): Promise<FakeKernel> {
  const s: Scenario = byId(id);
  const state: NodeState = change ? nodeState(s.services.map(change), 'node-a', [nodeIP, nodeIP6]) : stateOf(s);
  const fake = new FakeKernel([nodeIP, nodeIP6]);
  const r = await syncBackend(new IptablesBackend({ ...s.opts, exec: fake.exec }, silentLogger()), state, fullChanges(state));
  if (!r.ok) throw r.error;
  return fake;
}

/** Outcomes as "verdict dnat masq=yes/no @probability" strings, rounded. */
function show(o: readonly TraceOutcome[]): string[] {
  return o.map((x) => `${x.verdict}${x.dnat ? ` ${x.dnat}` : ''}${x.masquerade ? ' masq' : ''} @${x.probability.toFixed(3)}`);
}

const pod = podClient;
const outside = '198.18.0.9';
const tcp = (dst: string, dport: number, from: TracePacket['from'], src?: string): TracePacket => ({ dst, dport, proto: 'tcp', from, ...(src ? { src } : {}) });

test('ClusterIP spreads evenly over 3 endpoints; pod traffic is not masqueraded', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.deepEqual(show(k.trace(tcp('10.96.0.10', 80, 'external', pod))), [
    'accept 10.244.1.11:8080 @0.333', 'accept 10.244.2.12:8080 @0.333', 'accept 10.244.3.13:8080 @0.333',
  ]);
});

test('ClusterIP from the node itself (outside the cluster CIDR) is masqueraded', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.true(k.trace(tcp('10.96.0.10', 80, 'node')).every((o) => o.masquerade && o.verdict === 'accept'));
});

test('hairpin: an endpoint reaching itself through the Service is masqueraded, others are not', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.deepEqual(show(k.trace(tcp('10.96.0.10', 80, 'external', '10.244.2.12'))), [
    'accept 10.244.1.11:8080 @0.333', 'accept 10.244.2.12:8080 masq @0.333', 'accept 10.244.3.13:8080 @0.333',
  ]);
});

test('other ports of the ClusterIP are untouched', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.deepEqual(show(k.trace(tcp('10.96.0.10', 81, 'external', pod))), ['accept @1.000']);
});

test('NodePort from outside is DNATed and masqueraded', async (t) => {
  const k = await load('nodeport');
  t.deepEqual(show(k.trace(tcp(nodeIP, 30080, 'external', outside))), ['accept 10.244.2.21:80 masq @0.500', 'accept 10.244.3.22:80 masq @0.500']);
});

test('nodePortAddresses limits NodePorts to those CIDRs', async (t) => {
  const k = await load('nodeport-addresses');
  t.is(k.trace(tcp(nodeIP, 30090, 'external', outside)).length, 2);
  k.localAddresses.add('10.99.0.1');
  t.deepEqual(show(k.trace(tcp('10.99.0.1', 30090, 'external', outside))), ['accept @1.000']);
  t.deepEqual(show(k.trace(tcp(nodeIP, 30091, 'external', outside))), ['reject @1.000']);
});

test('externalIP is DNATed and masqueraded', async (t) => {
  const k = await load('external-ip');
  t.deepEqual(show(k.trace(tcp('203.0.113.10', 80, 'external', outside))), ['accept 10.244.2.31:80 masq @1.000']);
});

test('LoadBalancer source ranges: allowed sources reach endpoints, others are dropped', async (t) => {
  const k = await load('lb-source-ranges');
  t.deepEqual(show(k.trace(tcp('198.51.100.7', 443, 'external', '192.0.2.5'))), ['accept 10.244.2.41:8443 masq @0.500', 'accept 10.244.3.42:8443 masq @0.500']);
  // The load balancer's own address is let through, as by kube-proxy.
  t.is(k.trace(tcp('198.51.100.7', 443, 'external', '198.51.100.7')).length, 2);
  t.deepEqual(show(k.trace(tcp('198.51.100.7', 443, 'external', outside))), ['drop @1.000']);
  // The NodePort of the same Service is not subject to the source ranges.
  t.is(k.trace(tcp(nodeIP, 30443, 'external', outside)).length, 2);
});

test('ClientIP affinity: a new client is spread, through per-endpoint chains', async (t) => {
  const k = await load('affinity');
  t.deepEqual(show(k.trace(tcp('10.96.0.14', 80, 'external', pod))), ['accept 10.244.2.51:80 @0.500', 'accept 10.244.3.52:80 @0.500']);
});

test('externalTrafficPolicy Local: outside traffic only to local endpoints, unmasqueraded', async (t) => {
  const k = await load('etp-local-with-local-endpoints');
  t.deepEqual(show(k.trace(tcp(nodeIP, 30081, 'external', outside))), ['accept 10.244.1.61:80 @1.000']);
  t.deepEqual(show(k.trace(tcp('198.51.100.8', 80, 'external', outside))), ['accept 10.244.1.61:80 @1.000']);
  // Pods short-circuit to every endpoint; the ClusterIP uses every endpoint.
  t.is(k.trace(tcp(nodeIP, 30081, 'external', pod)).length, 2);
  t.is(k.trace(tcp('10.96.0.15', 80, 'external', pod)).length, 2);
  // From the node itself: all endpoints, masqueraded.
  t.true(k.trace(tcp('198.51.100.8', 80, 'node')).every((o) => o.masquerade && o.dnat));
});

test('externalTrafficPolicy Local without local endpoints: external traffic dropped, ClusterIP still works', async (t) => {
  const k = await load('etp-local-without-local-endpoints', (s) => withPort(s, { loadBalancerIPs: ['198.51.100.9'] }));
  t.deepEqual(show(k.trace(tcp(nodeIP, 30082, 'external', outside))), ['drop @1.000']);
  t.deepEqual(show(k.trace(tcp('198.51.100.9', 80, 'external', outside))), ['drop @1.000']);
  t.deepEqual(show(k.trace(tcp('10.96.0.16', 80, 'external', pod))), ['accept 10.244.2.71:80 @1.000']);
});

test('internalTrafficPolicy Local: only local endpoints; none local means DROP (not REJECT)', async (t) => {
  const k = await load('itp-local');
  t.deepEqual(show(k.trace(tcp('10.96.0.17', 80, 'external', pod))), ['accept 10.244.1.81:80 @1.000']);
  t.deepEqual(show(k.trace(tcp('10.96.0.18', 80, 'external', pod))), ['drop @1.000']);
  t.deepEqual(show(k.trace(tcp('10.96.0.18', 80, 'node'))), ['drop @1.000']);
});

test('no endpoints: ClusterIP, NodePort and externalIP are rejected at once', async (t) => {
  const k = await load('no-endpoints');
  t.deepEqual(show(k.trace(tcp('10.96.0.19', 80, 'external', pod))), ['reject @1.000']);
  t.deepEqual(show(k.trace(tcp('10.96.0.19', 80, 'node'))), ['reject @1.000']);
  t.deepEqual(show(k.trace(tcp(nodeIP, 30083, 'external', outside))), ['reject @1.000']);
  t.deepEqual(show(k.trace(tcp('203.0.113.19', 80, 'external', outside))), ['reject @1.000']);
});

test('terminating fallback endpoints given by NodeState are used', async (t) => {
  const k = await load('terminating-fallback');
  t.deepEqual(show(k.trace(tcp('10.96.0.26', 80, 'external', pod))), ['accept 10.244.2.131:80 @1.000']);
});

test('UDP and SCTP services match only their protocol', async (t) => {
  const dns = await load('udp');
  t.deepEqual(show(dns.trace({ dst: '10.96.0.20', dport: 53, proto: 'udp', from: 'external', src: pod })), ['accept 10.244.2.91:53 @0.500', 'accept 10.244.3.92:53 @0.500']);
  t.deepEqual(show(dns.trace(tcp('10.96.0.20', 53, 'external', pod))), ['accept @1.000']);
  const sctp = await load('sctp', (s) => withPort(s, { nodePort: 30099 }));
  t.deepEqual(show(sctp.trace({ dst: nodeIP, dport: 30099, proto: 'sctp', from: 'external', src: outside })), ['accept 10.244.2.101:9999 masq @1.000']);
});

test('IPv6: ClusterIP and NodePort through ip6tables', async (t) => {
  const k = await load('ipv6');
  t.deepEqual(show(k.trace(tcp('fd00:96::22', 80, 'external', 'fd00:244:2::99'))), ['accept [fd00:244:2::11]:80 @0.500', 'accept [fd00:244:3::12]:80 @0.500']);
  t.deepEqual(show(k.trace(tcp(nodeIP6, 30084, 'external', '2001:db8::1'))), ['accept [fd00:244:2::11]:80 masq @0.500', 'accept [fd00:244:3::12]:80 masq @0.500']);
});

test('multiple ports of one Service go to their own target ports', async (t) => {
  const k = await load('multiple-ports');
  t.deepEqual(show(k.trace(tcp('10.96.0.23', 443, 'external', pod))), ['accept 10.244.2.111:8443 @0.500', 'accept 10.244.3.112:8443 @0.500']);
  t.deepEqual(show(k.trace(tcp('10.96.0.23', 80, 'external', pod))), ['accept 10.244.2.111:8080 @0.500', 'accept 10.244.3.112:8080 @0.500']);
});

test('masqueradeAll masquerades pod traffic too', async (t) => {
  const k = await load('masquerade-all');
  t.deepEqual(show(k.trace(tcp('10.96.0.28', 80, 'external', pod))), ['accept 10.244.2.141:80 masq @1.000']);
});
