// The fixed part of kproxy's nftables table: base chains, the shared
// dispatch chains and the maps every Service's elements go into. A packet
// meets a constant number of map lookups whatever the number of Services;
// commits stay cheap because chains number in the tens, not one or more per
// Service and endpoint.
import { ofFamily } from '../../lib/net.ts';
import type { Family } from '../../proxy/model.ts';
import type { ModeOptions } from '../backend.ts';
import type { BaseChainSpec, NftFamily, SetSpec } from './objects.ts';

export const tableName = 'kproxy';

/** Spelling that differs between `table ip` and `table ip6`. */
export interface FamilySyntax {
  readonly family: Family;
  readonly nft: NftFamily;
  /** Payload prefix: "ip saddr" / "ip6 saddr". */
  readonly addr: 'ip' | 'ip6';
  readonly addrType: 'ipv4_addr' | 'ipv6_addr';
  readonly loopback: string;
}

export function familySyntax(family: Family): FamilySyntax {
  return family === 4
    ? { family, nft: 'ip', addr: 'ip', addrType: 'ipv4_addr', loopback: '127.0.0.0/8' }
    : { family, nft: 'ip6', addr: 'ip6', addrType: 'ipv6_addr', loopback: '::1' };
}

export const chains = {
  natPrerouting: 'nat-prerouting',
  natOutput: 'nat-output',
  natPostrouting: 'nat-postrouting',
  filterPrerouting: 'filter-prerouting',
  filterOutput: 'filter-output',
  services: 'services',
  endpointsCheck: 'endpoints-check',
  masquerading: 'masquerading',
  markForMasquerade: 'mark-for-masquerade',
  reject: 'reject-chain',
} as const;

export const maps = {
  /** address . protocol . port → verdict (ClusterIP, externalIP, LB IP). */
  serviceIPs: 'service-ips',
  /** protocol . port → verdict (NodePorts on local addresses). */
  serviceNodePorts: 'service-nodeports',
  /** Service addresses with no endpoints at all → goto reject-chain. */
  noEndpointServices: 'no-endpoint-services',
  noEndpointNodePorts: 'no-endpoint-nodeports',
  /** Original destination → jump to the Service's affinity recorder. */
  affinityRecord: 'affinity-record',
  affinityRecordNodePorts: 'affinity-record-nodeports',
  /** endpoint . endpoint: a pod reaching itself through its Service. */
  hairpin: 'hairpin',
} as const;

const l4protos = ['tcp', 'udp', 'sctp'] as const;
export type L4 = (typeof l4protos)[number];

// The endpoint data maps are per protocol: their typeof names the
// protocol's dport (nft 1.0.6 refuses "th dport" in map data once the map
// exists, and a "tcp dport" data map would tie every rule using it to TCP).
/** address . port . index → endpoint address . port, for protocol `p`. */
export const endpointsMap = (p: L4): string => `endpoints-${p}`;
/** nodePort . index → endpoint address . port, for protocol `p`. */
export const nodePortEndpointsMap = (p: L4): string => `nodeport-endpoints-${p}`;


export interface ChainDef {
  readonly name: string;
  readonly base?: BaseChainSpec;
  readonly rules: readonly string[];
}

export interface SetDef {
  readonly name: string;
  readonly kind: 'set' | 'map';
  readonly spec: SetSpec;
}

const masqueradeMark = (opts: ModeOptions): string => `0x${(1 << opts.masqueradeBit).toString(16).padStart(8, '0')}`;

/** An nft set literal as nft prints it back: a lone item has no braces. */
export function literalSet(items: readonly string[]): string {
  return items.length === 1 ? items[0] : `{ ${items.join(', ')} }`;
}

/** The match that makes a packet's destination a NodePort address, or undefined when this family has none. */
function nodePortMatch(f: FamilySyntax, opts: ModeOptions): string | undefined {
  const local = `fib daddr type local ${f.addr} daddr != ${f.loopback}`;
  if (opts.nodePortAddresses.length === 0) return local;
  const mine = ofFamily(opts.nodePortAddresses, f.family);
  return mine.length ? `${local} ${f.addr} daddr ${literalSet(mine)}` : undefined;
}

/** Rule (or none) marking ClusterIP traffic for masquerade: --masquerade-all, or from outside the cluster CIDRs. */
export function clusterMasqueradeRule(f: FamilySyntax, opts: ModeOptions): string | undefined {
  if (opts.masqueradeAll) return `jump ${chains.markForMasquerade}`;
  const cidrs = ofFamily(opts.clusterCIDRs, f.family);
  return cidrs.length ? `${f.addr} saddr != ${literalSet(cidrs)} jump ${chains.markForMasquerade}` : undefined;
}

/** Sets and maps present whatever the Services. */
export function staticSets(f: FamilySyntax): SetDef[] {
  const svcKey = `${f.addrType} . inet_proto . inet_service`;
  const verdictMap = (name: string, key: string): SetDef => ({ name, kind: 'map', spec: { keyword: 'type', key, data: 'verdict' } });
  return [
    verdictMap(maps.serviceIPs, svcKey),
    verdictMap(maps.serviceNodePorts, 'inet_proto . inet_service'),
    ...l4protos.map((p): SetDef => ({ name: endpointsMap(p), kind: 'map', spec: { keyword: 'typeof', key: `${f.addr} daddr . ${p} dport . numgen random mod 1`, data: `${f.addr} daddr . ${p} dport` } })),
    ...l4protos.map((p): SetDef => ({ name: nodePortEndpointsMap(p), kind: 'map', spec: { keyword: 'typeof', key: `${p} dport . numgen random mod 1`, data: `${f.addr} daddr . ${p} dport` } })),
    verdictMap(maps.noEndpointServices, svcKey),
    verdictMap(maps.noEndpointNodePorts, 'inet_proto . inet_service'),
    verdictMap(maps.affinityRecord, svcKey),
    verdictMap(maps.affinityRecordNodePorts, 'inet_proto . inet_service'),
    { name: maps.hairpin, kind: 'set', spec: { keyword: 'type', key: `${f.addrType} . ${f.addrType}` } },
  ];
}

/** Chains present whatever the Services, in the order they are created. */
export function staticChains(f: FamilySyntax, opts: ModeOptions): ChainDef[] {
  const mark = masqueradeMark(opts);
  const np = nodePortMatch(f, opts);
  const a = f.addr;
  return [
    { name: chains.markForMasquerade, rules: [`meta mark set meta mark | ${mark}`] },
    {
      name: chains.masquerading,
      rules: [
        // Affinity is recorded once the endpoint is known (after DNAT).
        ...l4protos.map((p) => `ct status dnat meta l4proto ${p} ct original ${a} daddr . meta l4proto . ct original proto-dst vmap @${maps.affinityRecord}`),
        ...l4protos.map((p) => `ct status dnat meta l4proto ${p} meta l4proto . ct original proto-dst vmap @${maps.affinityRecordNodePorts}`),
        // Hairpin: an endpoint reaching itself through its Service.
        `ct status dnat ${a} saddr . ${a} daddr @${maps.hairpin} masquerade fully-random`,
        `meta mark & ${mark} == 0x00000000 return`,
        `meta mark set meta mark ^ ${mark}`,
        'masquerade fully-random',
      ],
    },
    { name: chains.reject, rules: ['reject with tcp reset', 'reject'] },
    {
      name: chains.endpointsCheck,
      rules: [
        `${a} daddr . meta l4proto . th dport vmap @${maps.noEndpointServices}`,
        ...(np ? [`${np} meta l4proto . th dport vmap @${maps.noEndpointNodePorts}`] : []),
      ],
    },
    {
      name: chains.services,
      rules: [
        `${a} daddr . meta l4proto . th dport vmap @${maps.serviceIPs}`,
        ...(np ? [`${np} meta l4proto . th dport vmap @${maps.serviceNodePorts}`] : []),
      ],
    },
    // Rejects live in filter chains (nat chains cannot reject), before DNAT.
    { name: chains.filterPrerouting, base: { type: 'filter', hook: 'prerouting', priority: 'dstnat - 10' }, rules: [`ct state new jump ${chains.endpointsCheck}`] },
    { name: chains.filterOutput, base: { type: 'filter', hook: 'output', priority: '-110' }, rules: [`ct state new jump ${chains.endpointsCheck}`] },
    { name: chains.natPrerouting, base: { type: 'nat', hook: 'prerouting', priority: 'dstnat' }, rules: [`jump ${chains.services}`] },
    { name: chains.natOutput, base: { type: 'nat', hook: 'output', priority: '-100' }, rules: [`jump ${chains.services}`] },
    { name: chains.natPostrouting, base: { type: 'nat', hook: 'postrouting', priority: 'srcnat' }, rules: [`jump ${chains.masquerading}`] },
  ];
}

/**
 * The shared spread chains: one per endpoint count N and kind, choosing
 * endpoint `numgen random mod N` from the data maps, so the spread is even
 * for every count. Names: cluster-N (ClusterIP), external-N (externalIP /
 * LB IP), nodeport-N.
 */
export type SpreadKind = 'cluster' | 'external' | 'nodeport';

export function spreadChainName(kind: SpreadKind, n: number): string {
  return `${kind}-${n}`;
}

export function spreadChain(f: FamilySyntax, opts: ModeOptions, name: string): ChainDef {
  const m = /^(cluster|external|nodeport)-([1-9]\d*)$/.exec(name);
  if (!m) throw new Error(`not a spread chain: ${name}`);
  const kind = m[1] as SpreadKind;
  const n = Number(m[2]);
  const rules: string[] = [];
  if (kind === 'cluster') {
    const masq = clusterMasqueradeRule(f, opts);
    if (masq) rules.push(masq);
  } else {
    rules.push(`jump ${chains.markForMasquerade}`);
  }
  for (const p of l4protos) {
    rules.push(kind === 'nodeport'
      ? `dnat ${f.addr} to ${p} dport . numgen random mod ${n} map @${nodePortEndpointsMap(p)}`
      : `dnat ${f.addr} to ${f.addr} daddr . ${p} dport . numgen random mod ${n} map @${endpointsMap(p)}`);
  }
  return { name, rules };
}
