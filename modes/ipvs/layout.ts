// The iptables rules of the IPVS mode: a fixed set per family whatever the
// number of Services (each Service lives in the ipsets the rules match).
//
// Where a packet meets them (IPVS takes a new connection at LOCAL_IN for
// forwarded traffic, after filter INPUT, and at LOCAL_OUT for the node's
// own, after mangle and nat OUTPUT):
//  - mangle PREROUTING (from pods) and OUTPUT (from the node): traffic to an
//    external address of an externalTrafficPolicy Local port gets that
//    port's firewall mark, so it reaches the mark's virtual service (every
//    endpoint) instead of the address's one (this node's endpoints);
//  - mangle OUTPUT: the source-range firewall for the node's own traffic;
//  - nat PREROUTING: the masquerade mark (cluster IPs from outside the
//    cluster CIDR, external addresses under policy Cluster);
//  - filter INPUT, new connections only: the verdict for ports without
//    endpoints (reject: a TCP reset, ICMP otherwise; drop), the source-range
//    firewall, and a refusal of every other port of a Service address (the
//    addresses are the node's own on kube-ipvs0: kubernetes#72236);
//  - nat POSTROUTING: masquerade for the marked, the node's own connections
//    (their source is a local address, often the Service address itself)
//    and hairpin (an endpoint reaching itself).
import type { Family } from '../../proxy/model.ts';
import { chains, setName, type SetRole } from './names.ts';
import { renderRule, type IptMatch, type IptRule, type IptTarget, type Table } from './iptables.ts';

export interface LayoutOptions {
  readonly family: Family;
  /** The cluster CIDR of this family ('' when unknown). */
  readonly clusterCIDR: string;
  readonly masqueradeAll: boolean;
  /** The masquerade mark, e.g. 0x4000. */
  readonly mark: string;
}

export interface Chain {
  readonly table: Table;
  readonly name: string;
  /** Rules as written after `-A NAME`. */
  readonly rules: readonly string[];
}

/** A jump from a built-in chain into one of this mode's chains, kept at the head of that chain. */
export interface BuiltinJump {
  readonly table: Table;
  readonly from: string;
  readonly rule: string;
}

const set = (role: SetRole, family: Family, flags: 'dst' | 'dst,dst' | 'dst,dst,src', negate = false): IptMatch =>
  ({ kind: 'set', name: setName(role, family), flags, ...(negate ? { negate } : {}) });
const jump = (chain: string): IptTarget => ({ kind: 'jump', chain });
const comment = (text: string): IptMatch => ({ kind: 'comment', text });

export function layoutChains(o: LayoutOptions): Chain[] {
  const f = o.family;
  const rejectWith = f === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';
  const markAll = `${o.mark}/${o.mark}`;
  const cluster = o.clusterCIDR ? { cidr: o.clusterCIDR } : undefined;
  const c = (table: Table, name: string, rules: IptRule[]): Chain => ({ table, name, rules: rules.map(renderRule) });

  const services: IptRule[] = [];
  if (o.masqueradeAll) services.push({ matches: [set('clusterIP', f, 'dst,dst')], target: jump(chains.markMasq) });
  else if (cluster) services.push({ src: { ...cluster, negate: true }, matches: [set('clusterIP', f, 'dst,dst')], target: jump(chains.markMasq) });
  services.push(
    { matches: [set('externalIP', f, 'dst,dst')], target: jump(chains.markMasq) },
    { matches: [set('loadBalancer', f, 'dst,dst')], target: jump(chains.loadBalancer) },
    // NodePorts: on the node's own addresses, never on kube-ipvs0's.
    { matches: [{ kind: 'addrtype', dst: 'LOCAL' }, set('ipvsIPs', f, 'dst', true)], target: jump(chains.nodePort) },
  );
  const nodePort: IptRule[] = [];
  for (const [proto, local, all] of [['tcp', 'nodePortLocalTCP', 'nodePortTCP'], ['udp', 'nodePortLocalUDP', 'nodePortUDP'], ['sctp', 'nodePortLocalSCTP', 'nodePortSCTP']] as const) {
    nodePort.push(
      { proto, matches: [set(local, f, 'dst')], target: { kind: 'RETURN' } },
      { proto, matches: [set(all, f, 'dst')], target: jump(chains.markMasq) },
    );
  }

  const filter: IptRule[] = [
    { proto: 'tcp', matches: [comment('service without endpoints'), set('reject', f, 'dst,dst')], target: { kind: 'REJECT', with: 'tcp-reset' } },
    { matches: [comment('service without endpoints'), set('reject', f, 'dst,dst')], target: { kind: 'REJECT', with: rejectWith } },
    { matches: [comment('no endpoint for this traffic'), set('drop', f, 'dst,dst')], target: { kind: 'DROP' } },
    {
      ...(cluster ? { src: { ...cluster, negate: true } } : {}),
      matches: [comment('no local endpoint for outside traffic'), { kind: 'addrtype', src: 'LOCAL', negate: true }, set('externalDrop', f, 'dst,dst')],
      target: { kind: 'DROP' },
    },
    { matches: [set('loadBalancerFW', f, 'dst,dst')], target: jump(chains.sourceRanges) },
    { matches: [set('clusterIP', f, 'dst,dst')], target: { kind: 'RETURN' } },
    { matches: [set('externalIP', f, 'dst,dst')], target: { kind: 'RETURN' } },
    { matches: [set('externalIPLocal', f, 'dst,dst')], target: { kind: 'RETURN' } },
    { matches: [set('loadBalancer', f, 'dst,dst')], target: { kind: 'RETURN' } },
    { proto: 'tcp', matches: [comment('other ports of service addresses'), set('ipvsIPs', f, 'dst')], target: { kind: 'REJECT', with: 'tcp-reset' } },
    { matches: [comment('other ports of service addresses'), set('ipvsIPs', f, 'dst')], target: { kind: 'REJECT', with: rejectWith } },
  ];
  const sourceRanges: IptRule[] = [
    { matches: [set('loadBalancerSourceCIDR', f, 'dst,dst,src')], target: { kind: 'RETURN' } },
    { matches: [set('loadBalancerSourceIP', f, 'dst,dst,src')], target: { kind: 'RETURN' } },
    { matches: [comment('source not in loadBalancerSourceRanges')], target: { kind: 'DROP' } },
  ];

  return [
    c('nat', chains.services, services),
    c('nat', chains.loadBalancer, [
      { matches: [set('loadBalancerLocal', f, 'dst,dst')], target: { kind: 'RETURN' } },
      { matches: [], target: jump(chains.markMasq) },
    ]),
    c('nat', chains.nodePort, nodePort),
    c('nat', chains.markMasq, [{ matches: [], target: { kind: 'MARK', xmark: markAll } }]),
    c('nat', chains.postrouting, [
      { matches: [comment('hairpin'), set('loopback', f, 'dst,dst,src')], target: { kind: 'MASQUERADE', randomFully: false } },
      { matches: [comment('connections of the node itself'), { kind: 'addrtype', src: 'LOCAL' }, { kind: 'ipvs' }], target: { kind: 'MASQUERADE', randomFully: true } },
      { matches: [{ kind: 'mark', mark: markAll, negate: true }], target: { kind: 'RETURN' } },
      { matches: [], target: { kind: 'MARK', xmark: `${o.mark}/0x0` } },
      { matches: [comment('service traffic requiring snat')], target: { kind: 'MASQUERADE', randomFully: true } },
    ]),
    c('filter', chains.filter, filter),
    c('filter', chains.sourceRanges, sourceRanges),
    c('filter', chains.nodePort, [{ matches: [comment('health check node ports'), set('healthCheckNodePort', f, 'dst')], target: { kind: 'ACCEPT' } }]),
    c('filter', chains.forward, [
      { matches: [comment('forwarding rules'), { kind: 'mark', mark: markAll }], target: { kind: 'ACCEPT' } },
      { matches: [comment('forwarding conntrack rule'), { kind: 'conntrack', states: 'RELATED,ESTABLISHED' }], target: { kind: 'ACCEPT' } },
    ]),
    c('mangle', chains.fwmark, [{ matches: [set('fwmark', f, 'dst,dst')], target: { kind: 'SET', set: setName('fwmark', f), flags: 'dst,dst' } }]),
    // The node's own connections meet IPVS before filter OUTPUT: their firewall is here.
    c('mangle', chains.sourceRanges, sourceRanges),
  ];
}

/** The jumps from built-in chains, in the order they are kept at the chains' heads. */
export function builtinJumps(o: LayoutOptions): BuiltinJump[] {
  const cluster = o.clusterCIDR ? { cidr: o.clusterCIDR } : undefined;
  const j = (table: Table, from: string, rule: IptRule): BuiltinJump => ({ table, from, rule: renderRule(rule) });
  const out: BuiltinJump[] = [
    j('nat', 'PREROUTING', { matches: [comment('kproxy ipvs service portals')], target: jump(chains.services) }),
    j('nat', 'POSTROUTING', { matches: [comment('kproxy ipvs postrouting rules')], target: jump(chains.postrouting) }),
    j('filter', 'INPUT', { matches: [{ kind: 'conntrack', states: 'NEW' }, comment('kproxy ipvs service filter')], target: jump(chains.filter) }),
    j('filter', 'INPUT', { matches: [comment('kproxy ipvs health check node ports')], target: jump(chains.nodePort) }),
    j('filter', 'FORWARD', { matches: [comment('kproxy ipvs forwarding rules')], target: jump(chains.forward) }),
    j('mangle', 'OUTPUT', { matches: [comment('kproxy ipvs in-cluster marks')], target: jump(chains.fwmark) }),
    j('mangle', 'OUTPUT', {
      matches: [{ kind: 'conntrack', states: 'NEW' }, comment('kproxy ipvs source ranges'), set('loadBalancerFW', o.family, 'dst,dst')],
      target: jump(chains.sourceRanges),
    }),
  ];
  if (cluster) out.push(j('mangle', 'PREROUTING', { src: cluster, matches: [comment('kproxy ipvs in-cluster marks')], target: jump(chains.fwmark) }));
  return out;
}

/** Every chain this mode may own in a table (for cleanup and the kernel view). */
export function ownedChainNames(): { table: Table; name: string }[] {
  const o: LayoutOptions = { family: 4, clusterCIDR: '', masqueradeAll: false, mark: '0x4000' };
  return layoutChains(o).map((c) => ({ table: c.table, name: c.name }));
}
