// The names the IPVS mode writes into the kernel: the dummy interface, the
// ipsets (kube-proxy's names; IPv6 ones carry KUBE-6-) and the few
// iptables chains. Where kube-proxy's IPVS mode reuses a name that
// kproxy's iptables mode owns too (KUBE-SERVICES, KUBE-POSTROUTING,
// KUBE-MARK-MASQ, KUBE-FORWARD, KUBE-LOOP-BACK), this mode's object carries
// an IPVS infix instead: two modes sharing a chain could not hand a node
// over to each other without one removing the other's rules.
import type { Family } from '../../proxy/model.ts';
import type { SetSpec } from './ipset.ts';

/** The dummy interface that holds every Service address (kube-proxy's name). */
export const dummyDevice = 'kube-ipvs0';

/** What each set holds; its name per family comes from setName(). */
export const setRoles = [
  'clusterIP', 'loopback', 'externalIP', 'externalIPLocal', 'loadBalancer', 'loadBalancerLocal',
  'loadBalancerFW', 'loadBalancerSourceCIDR', 'loadBalancerSourceIP',
  'nodePortTCP', 'nodePortUDP', 'nodePortSCTP', 'nodePortLocalTCP', 'nodePortLocalUDP', 'nodePortLocalSCTP',
  'healthCheckNodePort', 'ipvsIPs', 'reject', 'drop', 'externalDrop', 'fwmark',
] as const;
export type SetRole = (typeof setRoles)[number];

const v4Names: Readonly<Record<SetRole, string>> = {
  clusterIP: 'KUBE-CLUSTER-IP',
  loopback: 'KUBE-IPVS-LOOP-BACK',
  externalIP: 'KUBE-EXTERNAL-IP',
  externalIPLocal: 'KUBE-EXTERNAL-IP-LOCAL',
  loadBalancer: 'KUBE-LOAD-BALANCER',
  loadBalancerLocal: 'KUBE-LOAD-BALANCER-LOCAL',
  loadBalancerFW: 'KUBE-LOAD-BALANCER-FW',
  loadBalancerSourceCIDR: 'KUBE-LOAD-BALANCER-SOURCE-CIDR',
  loadBalancerSourceIP: 'KUBE-LOAD-BALANCER-SOURCE-IP',
  nodePortTCP: 'KUBE-NODE-PORT-TCP',
  nodePortUDP: 'KUBE-NODE-PORT-UDP',
  nodePortSCTP: 'KUBE-NODE-PORT-SCTP',
  nodePortLocalTCP: 'KUBE-NODE-PORT-LOCAL-TCP',
  nodePortLocalUDP: 'KUBE-NODE-PORT-LOCAL-UDP',
  nodePortLocalSCTP: 'KUBE-NODE-PORT-LOCAL-SCTP',
  healthCheckNodePort: 'KUBE-HEALTH-CHECK-NODE-PORT',
  ipvsIPs: 'KUBE-IPVS-IPS',
  // kproxy's own: the verdicts for traffic no virtual server takes, and the
  // marks that send in-cluster traffic of externalTrafficPolicy Local
  // Services to every endpoint.
  reject: 'KUBE-SERVICE-REJECT',
  drop: 'KUBE-SERVICE-DROP',
  externalDrop: 'KUBE-EXTERNAL-DROP',
  fwmark: 'KUBE-SERVICE-FWMARK',
};

/** ipset names hold at most 31 characters: kube-proxy's KUBE-6-LOAD-BALANCER-SOURCE-CIDR (32) does not fit. */
const v6Exceptions: Partial<Record<SetRole, string>> = {
  loadBalancerSourceCIDR: 'KUBE-6-LOAD-BALANCER-SRC-CIDR',
};

export function setName(role: SetRole, family: Family): string {
  if (family === 4) return v4Names[role];
  return v6Exceptions[role] ?? v4Names[role].replace(/^KUBE-/, 'KUBE-6-');
}

/** The type of each set. */
export function setSpec(role: SetRole, family: Family): SetSpec {
  const inet = family === 4 ? 'inet' : 'inet6';
  switch (role) {
    case 'loopback':
      return { type: 'hash:ip,port,ip', family: inet };
    case 'loadBalancerSourceCIDR':
      return { type: 'hash:ip,port,net', family: inet };
    case 'loadBalancerSourceIP':
      return { type: 'hash:ip,port,ip', family: inet };
    case 'ipvsIPs':
      return { type: 'hash:ip', family: inet };
    case 'fwmark':
      return { type: 'hash:ip,port', family: inet, skbinfo: true };
    case 'nodePortTCP': case 'nodePortUDP': case 'nodePortSCTP':
    case 'nodePortLocalTCP': case 'nodePortLocalUDP': case 'nodePortLocalSCTP':
    case 'healthCheckNodePort':
      return { type: 'bitmap:port', range: [0, 65535] };
    default:
      return { type: 'hash:ip,port', family: inet };
  }
}

const typeByName = new Map<string, SetSpec['type']>();
for (const f of [4, 6] as const) for (const r of setRoles) typeByName.set(setName(r, f), setSpec(r, f).type);

/** The type of one of this mode's sets, by name. */
export function setTypeOf(name: string): SetSpec['type'] | undefined {
  return typeByName.get(name);
}

/** Every set name of this mode for a family. */
export function setNames(family: Family): string[] {
  return setRoles.map((r) => setName(r, family));
}

/**
 * kube-proxy's IPVS-mode sets that kproxy does not write (under these names),
 * removed by --cleanup and a mode switch when found. KUBE-LOOP-BACK is left
 * to the iptables mode, which owns a set of that name.
 */
export const kubeProxyLeftoverSets: readonly string[] = [
  'KUBE-NODE-PORT-SCTP-HASH', 'KUBE-NODE-PORT-LOCAL-SCTP-HASH', 'KUBE-6-NODE-PORT-SCTP-HASH', 'KUBE-6-NODE-PORT-LOCAL-SCTP-HASH',
];

/** The chains of this mode, per table. */
export const chains = {
  services: 'KUBE-IPVS-SERVICES',
  postrouting: 'KUBE-IPVS-POSTROUTING',
  markMasq: 'KUBE-IPVS-MARK-MASQ',
  loadBalancer: 'KUBE-LOAD-BALANCER',
  nodePort: 'KUBE-NODE-PORT',
  filter: 'KUBE-IPVS-FILTER',
  sourceRanges: 'KUBE-SOURCE-RANGES-FIREWALL',
  forward: 'KUBE-IPVS-FORWARD',
  fwmark: 'KUBE-IPVS-FWMARK',
} as const;

/** Chains of kube-proxy's IPVS mode that kproxy removes when it finds them (besides its own). */
export const kubeProxyLeftoverChains: readonly { table: 'nat' | 'filter'; name: string }[] = [
  { table: 'filter', name: 'KUBE-IPVS-OUT-FILTER' },
];

/**
 * Firewall marks of the virtual services that take in-cluster traffic of
 * externalTrafficPolicy Local ports: the id's bits spread around the
 * masquerade bit, which a mark never carries (ipvs matches a mark exactly).
 */
export function fwmarkOf(id: number, masqueradeBit: number): number {
  const below = 2 ** masqueradeBit;
  return (id % below) + Math.floor(id / below) * below * 2;
}

/** The largest id fwmarkOf() can place in 32 bits. */
export function maxFwmarkId(): number {
  return 2 ** 31 - 1;
}

/** The mask a set entry's skbmark carries: every bit but the masquerade bit. */
export function fwmarkMask(masqueradeBit: number): number {
  return (0xffffffff & ~(1 << masqueradeBit)) >>> 0;
}

/** A mark kproxy never gives a Service: its virtual service probes whether a scheduler's module loads. */
export function probeFwmark(masqueradeBit: number): number {
  return fwmarkOf(maxFwmarkId(), masqueradeBit);
}
