// Behaviour through the packet tracer: what happens to a new connection,
// whatever the exact rules look like. Rules go through the real backend
// code into the fake kernel (its Exec), as a sync would apply them.
import test from 'ava';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { FakeKernel } from '../modes/iptables/fake-kernel.ts';
import type { TraceOutcome, TracePacket } from '../modes/iptables/tracer.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges } from '../proxy/model.ts';
import { nodeIP, scenario } from './fixtures/iptables/scenarios.ts';
import { syncBackend } from '../modes/sync.ts';

async function load(name: string): Promise<FakeKernel> {
  const s = scenario(name);
  const fake = new FakeKernel([nodeIP, 'fd00:192:168::2']);
  const r = await syncBackend(new IptablesBackend({ ...s.opts, exec: fake.exec }, silentLogger()), s.state, fullChanges(s.state));
  if (!r.ok) throw r.error;
  return fake;
}

/** Outcomes as "verdict dnat masq=yes/no @probability" strings, rounded. */
function show(o: readonly TraceOutcome[]): string[] {
  return o.map((x) => `${x.verdict}${x.dnat ? ` ${x.dnat}` : ''}${x.masquerade ? ' masq' : ''} @${x.probability.toFixed(3)}`);
}

const pod = '10.180.0.99';
const outside = '198.18.0.9';
const tcp = (dst: string, dport: number, from: TracePacket['from'], src?: string): TracePacket => ({ dst, dport, proto: 'tcp', from, ...(src ? { src } : {}) });

test('ClusterIP spreads evenly over 3 endpoints; pod traffic is not masqueraded', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.deepEqual(show(k.trace(tcp('172.30.0.41', 80, 'external', pod))), [
    'accept 10.180.0.4:80 @0.333', 'accept 10.180.0.5:80 @0.333', 'accept 10.180.1.6:80 @0.333',
  ]);
});

test('ClusterIP from the node itself (outside the cluster CIDR) is masqueraded', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.true(k.trace(tcp('172.30.0.41', 80, 'node')).every((o) => o.masquerade && o.verdict === 'accept'));
});

test('hairpin: an endpoint reaching itself through the Service is masqueraded, others are not', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.deepEqual(show(k.trace(tcp('172.30.0.41', 80, 'external', '10.180.0.4'))), [
    'accept 10.180.0.4:80 masq @0.333', 'accept 10.180.0.5:80 @0.333', 'accept 10.180.1.6:80 @0.333',
  ]);
});

test('other ports of the ClusterIP are untouched', async (t) => {
  const k = await load('clusterip-3-endpoints');
  t.deepEqual(show(k.trace(tcp('172.30.0.41', 81, 'external', pod))), ['accept @1.000']);
});

test('NodePort from outside is DNATed and masqueraded', async (t) => {
  const k = await load('nodeport');
  t.deepEqual(show(k.trace(tcp(nodeIP, 3001, 'external', outside))), ['accept 10.180.0.4:80 masq @0.500', 'accept 10.180.0.5:80 masq @0.500']);
});

test('nodePortAddresses limits NodePorts to those CIDRs', async (t) => {
  const k = await load('nodeport-addresses');
  t.is(k.trace(tcp(nodeIP, 3001, 'external', outside)).length, 2);
  k.localAddresses.add('10.99.0.1');
  t.deepEqual(show(k.trace(tcp('10.99.0.1', 3001, 'external', outside))), ['accept @1.000']);
  t.deepEqual(show(k.trace(tcp(nodeIP, 3002, 'external', outside))), ['reject @1.000']);
});

test('externalIP is DNATed and masqueraded', async (t) => {
  const k = await load('external-ip');
  t.deepEqual(show(k.trace(tcp('192.168.99.33', 80, 'external', outside))), ['accept 10.180.0.4:80 masq @1.000']);
});

test('LoadBalancer source ranges: allowed sources reach endpoints, others are dropped', async (t) => {
  const k = await load('lb-source-ranges');
  t.deepEqual(show(k.trace(tcp('5.6.7.8', 80, 'external', '203.0.113.5'))), ['accept 10.180.0.4:80 masq @0.500', 'accept 10.180.0.5:80 masq @0.500']);
  t.is(k.trace(tcp('5.6.7.8', 80, 'external', '198.51.100.200')).length, 2);
  t.deepEqual(show(k.trace(tcp('5.6.7.8', 80, 'external', outside))), ['drop @1.000']);
  // The NodePort of the same Service is not subject to the source ranges.
  t.is(k.trace(tcp(nodeIP, 3004, 'external', outside)).length, 2);
});

test('ClientIP affinity: a new client is spread, through per-endpoint chains', async (t) => {
  const k = await load('affinity');
  t.deepEqual(show(k.trace(tcp('172.30.0.45', 80, 'external', pod))), ['accept 10.180.0.4:80 @0.500', 'accept 10.180.0.5:80 @0.500']);
});

test('externalTrafficPolicy Local: outside traffic only to local endpoints, unmasqueraded', async (t) => {
  const k = await load('etp-local-with-local-endpoints');
  t.deepEqual(show(k.trace(tcp(nodeIP, 3006, 'external', outside))), ['accept 10.180.0.5:80 @1.000']);
  t.deepEqual(show(k.trace(tcp('192.168.99.66', 80, 'external', outside))), ['accept 10.180.0.5:80 @1.000']);
  // Pods short-circuit to every endpoint; the ClusterIP uses every endpoint.
  t.is(k.trace(tcp(nodeIP, 3006, 'external', pod)).length, 3);
  t.is(k.trace(tcp('172.30.0.46', 80, 'external', pod)).length, 3);
  // From the node itself: all endpoints, masqueraded.
  t.true(k.trace(tcp('192.168.99.66', 80, 'node')).every((o) => o.masquerade && o.dnat));
});

test('externalTrafficPolicy Local without local endpoints: external traffic dropped, ClusterIP still works', async (t) => {
  const k = await load('etp-local-without-local-endpoints');
  t.deepEqual(show(k.trace(tcp(nodeIP, 3007, 'external', outside))), ['drop @1.000']);
  t.deepEqual(show(k.trace(tcp('5.6.7.9', 80, 'external', outside))), ['drop @1.000']);
  t.deepEqual(show(k.trace(tcp('172.30.0.47', 80, 'external', pod))), ['accept 10.180.0.4:80 @0.500', 'accept 10.180.1.6:80 @0.500']);
});

test('internalTrafficPolicy Local: only local endpoints; none local means DROP (not REJECT)', async (t) => {
  const k = await load('itp-local');
  t.deepEqual(show(k.trace(tcp('172.30.0.48', 80, 'external', pod))), ['accept 10.180.0.5:80 @1.000']);
  t.deepEqual(show(k.trace(tcp('172.30.0.58', 80, 'external', pod))), ['drop @1.000']);
  t.deepEqual(show(k.trace(tcp('172.30.0.58', 80, 'node'))), ['drop @1.000']);
});

test('no endpoints: ClusterIP, NodePort and externalIP are rejected at once', async (t) => {
  const k = await load('no-endpoints');
  t.deepEqual(show(k.trace(tcp('172.30.0.49', 80, 'external', pod))), ['reject @1.000']);
  t.deepEqual(show(k.trace(tcp('172.30.0.49', 80, 'node'))), ['reject @1.000']);
  t.deepEqual(show(k.trace(tcp(nodeIP, 3009, 'external', outside))), ['reject @1.000']);
  t.deepEqual(show(k.trace(tcp('192.168.99.99', 80, 'external', outside))), ['reject @1.000']);
});

test('terminating fallback endpoints given by NodeState are used', async (t) => {
  const k = await load('terminating-fallback');
  t.deepEqual(show(k.trace(tcp('172.30.0.50', 80, 'external', pod))), ['accept 10.180.0.7:80 @1.000']);
});

test('UDP and SCTP services match only their protocol', async (t) => {
  const dns = await load('udp');
  t.deepEqual(show(dns.trace({ dst: '172.30.0.10', dport: 53, proto: 'udp', from: 'external', src: pod })), ['accept 10.180.0.53:53 @0.500', 'accept 10.180.1.53:53 @0.500']);
  t.deepEqual(show(dns.trace(tcp('172.30.0.10', 53, 'external', pod))), ['accept @1.000']);
  const sctp = await load('sctp');
  t.deepEqual(show(sctp.trace({ dst: nodeIP, dport: 3011, proto: 'sctp', from: 'external', src: outside })), ['accept 10.180.0.8:9999 masq @1.000']);
});

test('IPv6: ClusterIP and NodePort through ip6tables', async (t) => {
  const k = await load('ipv6');
  t.deepEqual(show(k.trace(tcp('fd00:172:30::41', 80, 'external', 'fd00:10:180::99'))), ['accept [fd00:10:180::4]:80 @0.500', 'accept [fd00:10:180::5]:80 @0.500']);
  t.deepEqual(show(k.trace(tcp('fd00:192:168::2', 3012, 'external', '2001:db8::1'))), ['accept [fd00:10:180::4]:80 masq @0.500', 'accept [fd00:10:180::5]:80 masq @0.500']);
});

test('multiple ports of one Service go to their own target ports', async (t) => {
  const k = await load('multiple-ports');
  t.deepEqual(show(k.trace(tcp('172.30.0.53', 443, 'external', pod))), ['accept 10.180.0.10:8443 @0.500', 'accept 10.180.0.9:8443 @0.500']);
  t.deepEqual(show(k.trace(tcp('172.30.0.53', 80, 'external', pod))), ['accept 10.180.0.10:8080 @0.500', 'accept 10.180.0.9:8080 @0.500']);
});

test('masqueradeAll masquerades pod traffic too', async (t) => {
  const k = await load('masquerade-all');
  t.deepEqual(show(k.trace(tcp('172.30.0.54', 80, 'external', pod))), ['accept 10.180.0.4:80 masq @1.000']);
});
