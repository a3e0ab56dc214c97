// One table of behaviour, run through every mode of modes/registry.ts:
// a packet in (who sends it, to which address and port) and every place it
// may end up (an endpoint, masqueraded or not; dropped; refused with a TCP
// reset or an ICMP port-unreachable; left alone). Each mode's real backend
// writes its batches into that mode's fake dataplane, and the mode's tracer
// answers. A new mode joins by supplying `fake` in its descriptor; rule
// layouts may change freely as long as these answers stay.
import test from 'ava';
import { silentLogger } from '../lib/log.ts';
import type { TraceOutcome, TracePacket } from '../modes/fake.ts';
import { modes } from '../modes/registry.ts';
import type { ModeDescriptor } from '../modes/backend.ts';
import { syncBackend } from '../modes/sync.ts';
import { fullChanges, type Protocol } from '../proxy/model.ts';
import { byId, nodeIP, nodeIP6, outsideClient, podClient, stateOf } from './fixtures/services.ts';

/** Another address of the node, outside --nodeport-addresses in that scenario. */
const otherNodeAddress = '10.99.0.1';

interface Case {
  readonly scenario: string;
  readonly what: string;
  readonly packet: TracePacket;
  /** Every outcome, as "ip:port[ masq]", "accept" (left alone), "drop", "reset" or "icmp". */
  readonly expect: readonly string[];
  /** The packet goes to a Service address, on a port no Service serves there. */
  readonly unservedPortOfServiceAddress?: boolean;
}

const packet = (protocol: Protocol) => (src: string, dst: string, dport: number, from: TracePacket['from']): TracePacket =>
  ({ family: dst.includes(':') ? 6 : 4, src, dst, dport, protocol, from });
const tcp = packet('TCP');
const udp = packet('UDP');
const sctp = packet('SCTP');
const masq = (eps: readonly string[]): string[] => eps.map((e) => `${e} masq`);

const web = ['10.244.1.11:8080', '10.244.2.12:8080', '10.244.3.13:8080'];
const np = ['10.244.2.21:80', '10.244.3.22:80'];
const lb = ['10.244.2.41:8443', '10.244.3.42:8443'];
const etp = ['10.244.1.61:80', '10.244.2.62:80'];

const cases: readonly Case[] = [
  { scenario: 'clusterip-3-endpoints', what: 'a pod reaches every endpoint, unmasqueraded', packet: tcp(podClient, '10.96.0.10', 80, 'pod'), expect: web },
  { scenario: 'clusterip-3-endpoints', what: 'the node reaches every endpoint, masqueraded', packet: tcp(nodeIP, '10.96.0.10', 80, 'node'), expect: masq(web) },
  { scenario: 'clusterip-3-endpoints', what: 'an endpoint reaching itself through the Service is masqueraded (hairpin)', packet: tcp('10.244.1.11', '10.96.0.10', 80, 'pod'), expect: ['10.244.1.11:8080 masq', web[1], web[2]] },
  { scenario: 'clusterip-3-endpoints', what: 'another port of the cluster IP is left alone', packet: tcp(podClient, '10.96.0.10', 81, 'pod'), expect: ['accept'], unservedPortOfServiceAddress: true },
  { scenario: 'clusterip-3-endpoints', what: 'UDP to a TCP Service port is left alone', packet: udp(podClient, '10.96.0.10', 80, 'pod'), expect: ['accept'], unservedPortOfServiceAddress: true },

  { scenario: 'nodeport', what: 'outside traffic to the NodePort is masqueraded', packet: tcp(outsideClient, nodeIP, 30080, 'outside'), expect: masq(np) },
  { scenario: 'nodeport', what: 'the node reaches its own NodePort', packet: tcp(nodeIP, nodeIP, 30080, 'node'), expect: masq(np) },
  { scenario: 'nodeport', what: 'the NodePort on an address that is not the node\'s is left alone', packet: tcp(outsideClient, '198.18.5.5', 30080, 'outside'), expect: ['accept'] },

  { scenario: 'external-ip', what: 'outside traffic to an externalIP is masqueraded', packet: tcp(outsideClient, '203.0.113.10', 80, 'outside'), expect: ['10.244.2.31:80 masq'] },
  { scenario: 'external-ip', what: 'a pod reaching an externalIP is masqueraded too (policy Cluster)', packet: tcp(podClient, '203.0.113.10', 80, 'pod'), expect: ['10.244.2.31:80 masq'] },

  { scenario: 'lb-source-ranges', what: 'a client within the source ranges reaches the load-balancer IP', packet: tcp('192.0.2.5', '198.51.100.7', 443, 'outside'), expect: masq(lb) },
  { scenario: 'lb-source-ranges', what: 'the load balancer\'s own address gets through', packet: tcp('198.51.100.7', '198.51.100.7', 443, 'outside'), expect: masq(lb) },
  { scenario: 'lb-source-ranges', what: 'a client outside the source ranges is dropped', packet: tcp(outsideClient, '198.51.100.7', 443, 'outside'), expect: ['drop'] },
  { scenario: 'lb-source-ranges', what: 'the NodePort is not behind the source ranges', packet: tcp(outsideClient, nodeIP, 30443, 'outside'), expect: masq(lb) },
  { scenario: 'lb-source-ranges', what: 'the cluster IP is not behind the source ranges', packet: tcp(podClient, '10.96.0.13', 443, 'pod'), expect: lb },

  { scenario: 'affinity', what: 'a new client is spread over the endpoints', packet: tcp(podClient, '10.96.0.14', 80, 'pod'), expect: ['10.244.2.51:80', '10.244.3.52:80'] },

  { scenario: 'etp-local-with-local-endpoints', what: 'outside traffic to the NodePort goes to the local endpoint, client address kept', packet: tcp(outsideClient, nodeIP, 30081, 'outside'), expect: ['10.244.1.61:80'] },
  { scenario: 'etp-local-with-local-endpoints', what: 'outside traffic to the load-balancer IP goes to the local endpoint', packet: tcp(outsideClient, '198.51.100.8', 80, 'outside'), expect: ['10.244.1.61:80'] },
  { scenario: 'etp-local-with-local-endpoints', what: 'a pod reaching the load-balancer IP short-circuits to every endpoint', packet: tcp(podClient, '198.51.100.8', 80, 'pod'), expect: etp },
  { scenario: 'etp-local-with-local-endpoints', what: 'the node reaching the load-balancer IP goes to every endpoint, masqueraded', packet: tcp(nodeIP, '198.51.100.8', 80, 'node'), expect: masq(etp) },
  { scenario: 'etp-local-with-local-endpoints', what: 'the cluster IP uses every endpoint', packet: tcp(podClient, '10.96.0.15', 80, 'pod'), expect: etp },

  { scenario: 'etp-local-without-local-endpoints', what: 'outside traffic to the NodePort is dropped on a node without a local endpoint', packet: tcp(outsideClient, nodeIP, 30082, 'outside'), expect: ['drop'] },
  { scenario: 'etp-local-without-local-endpoints', what: 'a pod reaching the NodePort still gets the cluster-wide endpoint', packet: tcp(podClient, nodeIP, 30082, 'pod'), expect: ['10.244.2.71:80'] },
  { scenario: 'etp-local-without-local-endpoints', what: 'the node reaching its NodePort still gets the cluster-wide endpoint, masqueraded', packet: tcp(nodeIP, nodeIP, 30082, 'node'), expect: ['10.244.2.71:80 masq'] },
  { scenario: 'etp-local-without-local-endpoints', what: 'the cluster IP still works', packet: tcp(podClient, '10.96.0.16', 80, 'pod'), expect: ['10.244.2.71:80'] },

  { scenario: 'itp-local', what: 'internalTrafficPolicy Local uses the local endpoint only', packet: tcp(podClient, '10.96.0.17', 80, 'pod'), expect: ['10.244.1.81:80'] },
  { scenario: 'itp-local', what: 'without a local endpoint a pod\'s traffic is dropped, not refused', packet: tcp(podClient, '10.96.0.18', 80, 'pod'), expect: ['drop'] },
  { scenario: 'itp-local', what: 'without a local endpoint the node\'s traffic is dropped', packet: tcp(nodeIP, '10.96.0.18', 80, 'node'), expect: ['drop'] },

  { scenario: 'no-endpoints', what: 'TCP to the cluster IP of a Service without endpoints is reset at once', packet: tcp(podClient, '10.96.0.19', 80, 'pod'), expect: ['reset'] },
  { scenario: 'no-endpoints', what: 'the node\'s TCP to it is reset too', packet: tcp(nodeIP, '10.96.0.19', 80, 'node'), expect: ['reset'] },
  { scenario: 'no-endpoints', what: 'TCP to its NodePort is reset', packet: tcp(outsideClient, nodeIP, 30083, 'outside'), expect: ['reset'] },
  { scenario: 'no-endpoints', what: 'TCP to its externalIP is reset', packet: tcp(outsideClient, '203.0.113.19', 80, 'outside'), expect: ['reset'] },

  { scenario: 'udp-no-endpoints', what: 'UDP to a Service without endpoints gets ICMP port-unreachable', packet: udp(podClient, '10.96.0.27', 53, 'pod'), expect: ['icmp'] },
  { scenario: 'udp-no-endpoints', what: 'UDP to its NodePort gets ICMP port-unreachable', packet: udp(outsideClient, nodeIP, 30053, 'outside'), expect: ['icmp'] },

  { scenario: 'udp', what: 'UDP reaches both endpoints', packet: udp(podClient, '10.96.0.20', 53, 'pod'), expect: ['10.244.2.91:53', '10.244.3.92:53'] },
  { scenario: 'udp', what: 'TCP to a UDP Service port is left alone', packet: tcp(podClient, '10.96.0.20', 53, 'pod'), expect: ['accept'], unservedPortOfServiceAddress: true },
  { scenario: 'sctp', what: 'SCTP reaches its endpoint', packet: sctp(podClient, '10.96.0.21', 9999, 'pod'), expect: ['10.244.2.101:9999'] },

  { scenario: 'ipv6', what: 'an IPv6 pod reaches both endpoints', packet: tcp('fd00:244:2::200', 'fd00:96::22', 80, 'pod'), expect: ['[fd00:244:2::11]:80', '[fd00:244:3::12]:80'] },
  { scenario: 'ipv6', what: 'outside IPv6 traffic to the NodePort is masqueraded', packet: tcp('2001:db8::1', nodeIP6, 30084, 'outside'), expect: ['[fd00:244:2::11]:80 masq', '[fd00:244:3::12]:80 masq'] },

  { scenario: 'multiple-ports', what: 'port 80 goes to the endpoints\' 8080', packet: tcp(podClient, '10.96.0.23', 80, 'pod'), expect: ['10.244.2.111:8080', '10.244.3.112:8080'] },
  { scenario: 'multiple-ports', what: 'port 443 goes to the endpoints\' 8443', packet: tcp(podClient, '10.96.0.23', 443, 'pod'), expect: ['10.244.2.111:8443', '10.244.3.112:8443'] },

  { scenario: 'nodeport-addresses', what: 'a NodePort answers on an address within --nodeport-addresses', packet: tcp(outsideClient, nodeIP, 30090, 'outside'), expect: ['10.244.2.121:80 masq', '10.244.3.122:80 masq'] },
  { scenario: 'nodeport-addresses', what: 'a NodePort on another node address is left alone', packet: tcp(outsideClient, otherNodeAddress, 30090, 'outside'), expect: ['accept'] },
  { scenario: 'nodeport-addresses', what: 'a NodePort without endpoints is reset within --nodeport-addresses', packet: tcp(outsideClient, nodeIP, 30091, 'outside'), expect: ['reset'] },
  { scenario: 'nodeport-addresses', what: 'a NodePort without endpoints on another node address is left alone', packet: tcp(outsideClient, otherNodeAddress, 30091, 'outside'), expect: ['accept'] },

  { scenario: 'terminating-fallback', what: 'a serving terminating endpoint is used when none is ready', packet: tcp(podClient, '10.96.0.26', 80, 'pod'), expect: ['10.244.2.131:80'] },
  { scenario: 'masquerade-all', what: '--masquerade-all masquerades a pod\'s traffic too', packet: tcp(podClient, '10.96.0.28', 80, 'pod'), expect: ['10.244.2.141:80 masq'] },
];

/**
 * What `mode` should answer: the case's outcomes, with each difference the
 * mode declares (modes/backend.ts ModeDifferences) applied and said.
 */
function expected(mode: ModeDescriptor, c: Case): { expect: string[]; differs: string[] } {
  const d = mode.differences ?? {};
  let expect = [...c.expect];
  const differs: string[] = [];
  if (d.unservedProtocols?.includes(c.packet.protocol)) {
    differs.push(`${c.packet.protocol} is not served: the core refuses the port (log, Warning Event) and the packet is left alone`);
    expect = ['accept'];
  } else if (d.serviceAddressesLocal && c.unservedPortOfServiceAddress) {
    const answer = c.packet.protocol === 'TCP' ? 'reset' : 'icmp';
    differs.push(`the Service address is a local address: the kernel answers an unserved port (${answer})`);
    expect = [answer];
  }
  if (d.sourceIsNode && expect.some((e) => /^[[\d]/.test(e) && !e.endsWith(' masq'))) {
    differs.push('endpoints see the node\'s address as the source');
    expect = expect.map((e) => (/^[[\d]/.test(e) && !e.endsWith(' masq') ? `${e} masq` : e));
  }
  return { expect: expect.sort(), differs };
}

function show(outcomes: readonly TraceOutcome[]): string[] {
  return [...new Set(outcomes.map((o) => (o.verdict !== 'accept' ? o.verdict : `${o.endpoint ?? 'accept'}${o.masquerade ? ' masq' : ''}`)))].sort();
}

test('every case names a scenario of the shared table', (t) => {
  for (const c of cases) t.notThrows(() => byId(c.scenario), c.scenario);
});

for (const mode of modes) {
  const loaded = new Map<string, Promise<(p: TracePacket) => TraceOutcome[]>>();
  const load = (id: string): Promise<(p: TracePacket) => TraceOutcome[]> => {
    let l = loaded.get(id);
    if (!l) {
      l = (async () => {
        const s = byId(id);
        const fake = mode.fake({ localAddresses: [nodeIP, nodeIP6, otherNodeAddress] });
        const state = stateOf(s);
        const r = await syncBackend(mode.create({ ...s.opts, exec: fake.exec }, silentLogger()), state, fullChanges(state));
        if (!r.ok) throw r.error;
        return (p) => fake.trace(p);
      })();
      loaded.set(id, l);
    }
    return l;
  };
  for (const c of cases) {
    const { expect, differs } = expected(mode, c);
    const title = `${mode.name}: ${c.scenario}: ${c.what}${differs.length ? ` — in this mode: ${differs.join('; ')}` : ''}`;
    test(title, async (t) => {
      const trace = await load(c.scenario);
      t.deepEqual(show(trace(c.packet)), expect);
    });
  }
}
