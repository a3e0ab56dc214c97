// Behaviour of the nftables datapath, traced through the fake kernel: where
// a new connection can go, whether it is masqueraded, rejected or dropped.
// These survive rule refactors; the golden tests catch accidental churn.
import test from 'ava';
import { describe, remember, trace, type Packet } from '../modes/nftables/tracer.ts';
import type { Protocol } from '../proxy/model.ts';
import { nodeState } from './helpers/state.ts';
import { allServices, nodeIP, nodeIP6, defaultOptions as options } from './fixtures/services.ts';
import { loaded } from './fixtures/nftables/golden.ts';

const kernel = loaded(nodeState(allServices, 'node-a', [nodeIP, nodeIP6]), options);
const env = { localAddresses: [nodeIP, nodeIP6, '127.0.0.1'] };
const pod = '10.244.1.5'; // a pod on this node
const remotePod = '10.244.7.9';
const outside = '192.0.2.99';

function go(saddr: string, daddr: string, dport: number, protocol: Protocol = 'TCP', from: Packet['from'] = 'outside'): string[] {
  return describe(trace(kernel, { family: daddr.includes(':') ? 6 : 4, saddr, daddr, dport, protocol, from }, env));
}

test('ClusterIP from a pod: any of the 3 endpoints, not masqueraded', (t) => {
  t.deepEqual(go(pod, '10.96.0.10', 80), ['10.244.1.11:8080', '10.244.2.12:8080', '10.244.3.13:8080']);
});

test('ClusterIP from outside the cluster CIDR is masqueraded', (t) => {
  t.deepEqual(go(outside, '10.96.0.10', 80), ['10.244.1.11:8080 masq', '10.244.2.12:8080 masq', '10.244.3.13:8080 masq']);
});

test('ClusterIP from the node itself (output hook) is masqueraded', (t) => {
  t.deepEqual(go(nodeIP, '10.96.0.10', 80, 'TCP', 'node'), ['10.244.1.11:8080 masq', '10.244.2.12:8080 masq', '10.244.3.13:8080 masq']);
});

test('a port the Service does not have is left alone', (t) => {
  t.deepEqual(go(pod, '10.96.0.10', 81), ['accept']);
  t.deepEqual(go(pod, '10.96.0.10', 80, 'UDP'), ['accept']);
});

test('NodePort on a node address reaches the endpoints, masqueraded', (t) => {
  t.deepEqual(go(outside, nodeIP, 30080), ['10.244.2.21:80 masq', '10.244.3.22:80 masq']);
  t.deepEqual(go(nodeIP, nodeIP, 30080, 'TCP', 'node'), ['10.244.2.21:80 masq', '10.244.3.22:80 masq']);
});

test('NodePort is not served on loopback or on addresses the node does not own', (t) => {
  t.deepEqual(go(outside, '127.0.0.1', 30080, 'TCP', 'node'), ['accept']);
  t.deepEqual(go(outside, '192.168.0.77', 30080), ['accept']);
});

test('externalIP reaches the endpoint, masqueraded', (t) => {
  t.deepEqual(go(outside, '203.0.113.10', 80), ['10.244.2.31:80 masq']);
});

test('LoadBalancer source ranges: allowed source passes, others are dropped; the NodePort is not firewalled', (t) => {
  t.deepEqual(go('192.0.2.5', '198.51.100.7', 443), ['10.244.2.41:8443 masq', '10.244.3.42:8443 masq']);
  t.deepEqual(go('203.0.113.99', '198.51.100.7', 443), ['drop']);
  t.deepEqual(go('203.0.113.99', nodeIP, 30443), ['10.244.2.41:8443 masq', '10.244.3.42:8443 masq']);
  t.deepEqual(go(pod, '10.96.0.13', 443), ['10.244.2.41:8443', '10.244.3.42:8443']);
});

test('ClientIP affinity: after the first connection a client keeps its endpoint', (t) => {
  const pkt: Packet = { family: 4, saddr: pod, daddr: '10.96.0.14', dport: 80, protocol: 'TCP' };
  const first = trace(kernel, pkt, env);
  t.deepEqual(describe(first), ['10.244.2.51:80', '10.244.3.52:80']);
  const chosen = first.find((o) => o.dnat === '10.244.3.52:80')!;
  t.deepEqual(chosen.updates, ['aff-OYG37ED3-10.244.3.52/80'], 'the path records the client for the chosen endpoint');
  remember(kernel, pkt, chosen);
  t.deepEqual(go(pod, '10.96.0.14', 80), ['10.244.3.52:80']);
  t.deepEqual(go('10.244.1.6', '10.96.0.14', 80), ['10.244.2.51:80', '10.244.3.52:80'], 'another client still gets either');
});

test('externalTrafficPolicy Local: outside traffic only to the local endpoint, source kept', (t) => {
  t.deepEqual(go(outside, '198.51.100.8', 80), ['10.244.1.61:80']);
  t.deepEqual(go(outside, nodeIP, 30081), ['10.244.1.61:80']);
});

test('externalTrafficPolicy Local: pods and the node short-circuit to every endpoint', (t) => {
  t.deepEqual(go(remotePod, '198.51.100.8', 80), ['10.244.1.61:80', '10.244.2.62:80']);
  t.deepEqual(go(nodeIP, nodeIP, 30081, 'TCP', 'node'), ['10.244.1.61:80 masq', '10.244.2.62:80 masq']);
});

test('externalTrafficPolicy Local without a local endpoint: outside traffic is dropped, cluster traffic still served', (t) => {
  t.deepEqual(go(outside, nodeIP, 30082), ['drop']);
  t.deepEqual(go(pod, nodeIP, 30082), ['10.244.2.71:80']);
  t.deepEqual(go(pod, '10.96.0.16', 80), ['10.244.2.71:80']);
});

test('internalTrafficPolicy Local: only the local endpoint; none local means drop', (t) => {
  t.deepEqual(go(pod, '10.96.0.17', 80), ['10.244.1.81:80']);
  t.deepEqual(go(pod, '10.96.0.18', 80), ['drop']);
});

test('a Service without endpoints rejects at once, on every frontend', (t) => {
  t.deepEqual(go(pod, '10.96.0.19', 80), ['reject']);
  t.deepEqual(go(outside, '203.0.113.19', 80), ['reject']);
  t.deepEqual(go(outside, nodeIP, 30083), ['reject']);
  t.deepEqual(go(nodeIP, '10.96.0.19', 80, 'TCP', 'node'), ['reject']);
});

test('UDP and SCTP are served by their own ports only', (t) => {
  t.deepEqual(go(pod, '10.96.0.20', 53, 'UDP'), ['10.244.2.91:53', '10.244.3.92:53']);
  t.deepEqual(go(pod, '10.96.0.20', 53, 'TCP'), ['accept']);
  t.deepEqual(go(pod, '10.96.0.21', 9999, 'SCTP'), ['10.244.2.101:9999']);
});

test('IPv6 ClusterIP and NodePort', (t) => {
  t.deepEqual(go('fd00:244:1::5', 'fd00:96::22', 80), ['[fd00:244:2::11]:80', '[fd00:244:3::12]:80']);
  t.deepEqual(go('fd00:99::1', nodeIP6, 30084), ['[fd00:244:2::11]:80 masq', '[fd00:244:3::12]:80 masq']);
});

test('several ports of one Service go to their own target ports', (t) => {
  t.deepEqual(go(pod, '10.96.0.23', 80), ['10.244.2.111:8080', '10.244.3.112:8080']);
  t.deepEqual(go(pod, '10.96.0.23', 443), ['10.244.2.111:8443', '10.244.3.112:8443']);
});

test('hairpin: an endpoint reaching itself through its Service is masqueraded', (t) => {
  t.deepEqual(go('10.244.1.11', '10.96.0.10', 80), ['10.244.1.11:8080 masq', '10.244.2.12:8080', '10.244.3.13:8080']);
});

test('--masquerade-all masquerades pod traffic too', (t) => {
  const k = loaded(nodeState(allServices), { ...options, masqueradeAll: true });
  t.deepEqual(describe(trace(k, { family: 4, saddr: pod, daddr: '10.96.0.20', dport: 53, protocol: 'UDP' }, env)), ['10.244.2.91:53 masq', '10.244.3.92:53 masq']);
});

test('--nodeport-addresses limits NodePorts to local addresses inside the CIDRs', (t) => {
  const k = loaded(nodeState(allServices), { ...options, nodePortAddresses: ['192.168.0.0/24'] });
  const e = { localAddresses: [nodeIP, '172.16.0.2'] };
  t.deepEqual(describe(trace(k, { family: 4, saddr: outside, daddr: nodeIP, dport: 30080, protocol: 'TCP' }, e)), ['10.244.2.21:80 masq', '10.244.3.22:80 masq']);
  t.deepEqual(describe(trace(k, { family: 4, saddr: outside, daddr: '172.16.0.2', dport: 30080, protocol: 'TCP' }, e)), ['accept']);
  t.deepEqual(describe(trace(k, { family: 6, saddr: 'fd00:99::1', daddr: nodeIP6, dport: 30084, protocol: 'TCP' }, { localAddresses: [nodeIP6] })), ['accept'], 'no IPv6 CIDR given: no IPv6 NodePorts');
});

test('without cluster CIDRs ClusterIP traffic is not masqueraded (kube-proxy without --cluster-cidr)', (t) => {
  const k = loaded(nodeState(allServices), { ...options, clusterCIDRs: [] });
  t.deepEqual(describe(trace(k, { family: 4, saddr: outside, daddr: '10.96.0.21', dport: 9999, protocol: 'SCTP' }, env)), ['10.244.2.101:9999']);
});
