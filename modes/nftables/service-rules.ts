// What one service port adds to kproxy's table: elements in the shared maps
// and, only when it needs per-Service behaviour (affinity, a Local traffic
// policy, LB source ranges), a few chains of its own. A "plain" Service
// (the common case) owns no chain: its frontends point at the shared
// spread chains (cluster-N, external-N, nodeport-N) and its endpoints are
// elements of the endpoints maps.
import { createHash } from 'node:crypto';
import { canonicalIP, hostPort, ofFamily } from '../../lib/net.ts';
import type { Endpoint, ServicePortState } from '../../proxy/model.ts';
import type { ModeOptions } from '../backend.ts';
import { unsafeValue, type RefusedPort } from '../values.ts';
import {
  chains, clusterMasqueradeRule, endpointsMap, literalSet, maps, nodePortEndpointsMap, spreadChainName, type L4,
  type ChainDef, type FamilySyntax, type SetDef,
} from './layout.ts';

export interface ElementRef {
  readonly set: string;
  readonly key: string;
  readonly value?: string;
}

export interface Contribution {
  /** Chains only this service port uses. */
  readonly chains: readonly ChainDef[];
  /** Sets only this service port uses (affinity). */
  readonly sets: readonly SetDef[];
  readonly elements: readonly ElementRef[];
  /** Shared spread chains it points at (kept while anyone uses them). */
  readonly shared: readonly string[];
}

const base32Alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** First 8 base32 characters of sha256(text): a stable, short, name-safe tag. */
function hashTag(text: string): string {
  const bytes = createHash('sha256').update(text).digest();
  let bits = 0n;
  for (let i = 0; i < 5; i++) bits = (bits << 8n) | BigInt(bytes[i]);
  let out = '';
  for (let i = 7; i >= 0; i--) out += base32Alphabet[Number((bits >> BigInt(i * 5)) & 31n)];
  return out;
}

/**
 * "HASH-ns/name/proto/port": unique per service port, readable in dumps.
 * The readable part only when it fits nft's identifier grammar (letters,
 * digits, / _ . -), else the hash alone: a name is never syntax.
 */
function serviceTag(s: ServicePortState): string {
  const proto = s.protocol.toLowerCase();
  const hash = hashTag(`${s.name}/${proto}`);
  const readable = `${s.namespace}/${s.serviceName}/${proto}/${s.portName || s.port}`;
  return readable.length <= 200 && /^[A-Za-z0-9/_.-]+$/.test(readable) ? `${hash}-${readable}` : hash;
}

function endpointValue(e: Endpoint): string {
  return `${canonicalIP(e.ip)} . ${e.port}`;
}

function addrPort(e: Endpoint): string {
  return hostPort(canonicalIP(e.ip), e.port);
}

function sortEndpoints(list: readonly Endpoint[]): Endpoint[] {
  return [...list].sort((a, b) => (a.ip === b.ip ? a.port - b.port : canonicalIP(a.ip) < canonicalIP(b.ip) ? -1 : 1));
}

function affinitySetName(tag: string, e: Endpoint): string {
  return `aff-${tag.slice(0, 8)}-${canonicalIP(e.ip).replaceAll(':', '-')}/${e.port}`;
}

/** Whether the port needs no chains of its own: every traffic source uses the cluster-wide endpoints, unfiltered. */
function isPlain(s: ServicePortState): boolean {
  return s.affinityTimeoutSeconds === 0 && !s.internalPolicyLocal && s.masqueradeExternal && !s.firewall &&
    s.clusterEndpoints.length > 0;
}

/** Whether `s` owns chains or sets of its own (cheap, without building them). */
export function ownsObjects(s: ServicePortState): boolean {
  return s.noEndpointVerdict !== 'reject' && !isPlain(s);
}

/**
 * Everything `s` puts into the table of family `f`, or why it puts nothing:
 * a port holding a value no command may carry is left out of the table.
 */
export function checkedContribution(s: ServicePortState, f: FamilySyntax, opts: ModeOptions): Contribution | RefusedPort {
  const unsafe = unsafeValue(s);
  return unsafe ? { key: s.key, reason: unsafe } : contribution(s, f, opts);
}

export function isRefused(c: Contribution | RefusedPort): c is RefusedPort {
  return 'reason' in c;
}

/** Everything `s` puts into the table of family `f` (its values must have passed unsafeValue). */
export function contribution(s: ServicePortState, f: FamilySyntax, opts: ModeOptions): Contribution {
  const p = s.protocol.toLowerCase() as L4;
  const clusterIP = s.clusterIP ? [canonicalIP(s.clusterIP)] : [];
  const externals = [...s.externalIPs, ...s.loadBalancerIPs.filter((ip) => !s.externalIPs.includes(ip))].map(canonicalIP);
  const elements: ElementRef[] = [];
  const svcKey = (ip: string): string => `${ip} . ${p} . ${s.port}`;
  const npKey = `${p} . ${s.nodePort}`;

  // No endpoints anywhere: every frontend rejects at once (filter chain).
  if (s.noEndpointVerdict === 'reject') {
    const reject = `goto ${chains.reject}`;
    for (const ip of [...clusterIP, ...externals]) elements.push({ set: maps.noEndpointServices, key: svcKey(ip), value: reject });
    if (s.nodePort) elements.push({ set: maps.noEndpointNodePorts, key: npKey, value: reject });
    return { chains: [], sets: [], elements, shared: [] };
  }

  // Only a pod on this node can reach itself through this node's rules, so
  // only local endpoints need the hairpin masquerade.
  const hairpin = sortEndpoints(s.allReachableEndpoints.filter((e) => e.isLocal))
    .map((e) => ({ set: maps.hairpin, key: `${canonicalIP(e.ip)} . ${canonicalIP(e.ip)}` }));

  if (isPlain(s)) {
    const eps = sortEndpoints(s.clusterEndpoints);
    const n = eps.length;
    const shared = new Set<string>();
    const frontend = (ip: string, kind: 'cluster' | 'external'): void => {
      const chain = spreadChainName(kind, n);
      shared.add(chain);
      elements.push({ set: maps.serviceIPs, key: svcKey(ip), value: `goto ${chain}` });
      eps.forEach((e, i) => elements.push({ set: endpointsMap(p), key: `${ip} . ${s.port} . ${i}`, value: endpointValue(e) }));
    };
    for (const ip of clusterIP) frontend(ip, 'cluster');
    for (const ip of externals) frontend(ip, 'external');
    if (s.nodePort) {
      const chain = spreadChainName('nodeport', n);
      shared.add(chain);
      elements.push({ set: maps.serviceNodePorts, key: npKey, value: `goto ${chain}` });
      eps.forEach((e, i) => elements.push({ set: nodePortEndpointsMap(p), key: `${s.nodePort} . ${i}`, value: endpointValue(e) }));
    }
    elements.push(...hairpin);
    return { chains: [], sets: [], elements, shared: [...shared] };
  }

  return specialContribution(s, f, opts, { clusterIP, externals, elements: [...elements, ...hairpin], svcKey, npKey, p });
}

interface Frontends {
  clusterIP: string[];
  externals: string[];
  elements: ElementRef[];
  svcKey: (ip: string) => string;
  npKey: string;
  p: string;
}

function specialContribution(s: ServicePortState, f: FamilySyntax, opts: ModeOptions, fe: Frontends): Contribution {
  const tag = serviceTag(s);
  const a = f.addr;
  const name = {
    internal: `svc-${tag}`,
    external: `ext-${tag}`,
    firewall: `fw-${tag}`,
    cluster: `eps-${tag}`,
    local: `leps-${tag}`,
    record: `rec-${tag}`,
  };
  const out: ChainDef[] = [];
  const sets: SetDef[] = [];
  const { elements, p } = fe;
  const affinity = s.affinityTimeoutSeconds > 0;
  const internalList = sortEndpoints(s.internalEndpoints);
  const internalKind = s.internalPolicyLocal ? 'local' : 'cluster';
  const targets = new Map<'cluster' | 'local', Endpoint[]>();

  // A policy's endpoints, or DROP when the Service has endpoints but none for this policy.
  const go = (kind: 'cluster' | 'local', list: Endpoint[]): string => {
    if (list.length === 0) return 'drop';
    targets.set(kind, list);
    return `goto ${name[kind]}`;
  };

  if (fe.clusterIP.length) {
    const masq = clusterMasqueradeRule(f, opts);
    out.push({ name: name.internal, rules: [...(masq ? [masq] : []), go(internalKind, internalList)] });
    for (const ip of fe.clusterIP) elements.push({ set: maps.serviceIPs, key: fe.svcKey(ip), value: `goto ${name.internal}` });
  }

  if (s.externallyReachable) {
    const rules: string[] = [];
    if (!s.masqueradeExternal) {
      // Traffic from pods and from the node itself short-circuits to the
      // cluster-wide endpoints; only outside traffic is Local-only.
      const fromCluster = sortEndpoints(s.externalFromClusterEndpoints);
      const podCIDRs = ofFamily(opts.clusterCIDRs, f.family);
      if (podCIDRs.length) rules.push(`${a} saddr ${literalSet(podCIDRs)} ${go('cluster', fromCluster)}`);
      rules.push(`fib saddr type local jump ${chains.markForMasquerade}`);
      rules.push(`fib saddr type local ${go('cluster', fromCluster)}`);
      rules.push(go('local', sortEndpoints(s.externalEndpoints)));
    } else {
      rules.push(`jump ${chains.markForMasquerade}`);
      rules.push(go('cluster', sortEndpoints(s.externalEndpoints)));
    }
    out.push({ name: name.external, rules });
    if (s.firewall) {
      // nft lists a host prefix as the bare address: write it so, and listings compare as text.
      const sources = s.firewallSources.map((c) => c.replace(/\/(32|128)$/, ''));
      out.push({ name: name.firewall, rules: [`${a} saddr ${literalSet(sources)} goto ${name.external}`, 'drop'] });
    }
    const lbIPs = new Set(s.loadBalancerIPs.map(canonicalIP));
    for (const ip of fe.externals) {
      const via = s.firewall && lbIPs.has(ip) && !s.externalIPs.map(canonicalIP).includes(ip) ? name.firewall : name.external;
      elements.push({ set: maps.serviceIPs, key: fe.svcKey(ip), value: `goto ${via}` });
    }
    if (s.nodePort) elements.push({ set: maps.serviceNodePorts, key: fe.npKey, value: `goto ${name.external}` });
  }

  // Affinity: one dynamic set of clients per endpoint; a client found in
  // an endpoint's set goes back to it, and the set is refreshed once the
  // connection's endpoint is known (postrouting, via affinity-record).
  const affSets = new Map<string, Endpoint>();
  for (const [kind, list] of targets) {
    const rules: string[] = [];
    for (const e of affinity ? list : []) {
      const set = affinitySetName(tag, e);
      affSets.set(set, e);
      rules.push(`${a} saddr @${set} meta l4proto ${p} dnat to ${addrPort(e)}`);
    }
    rules.push(list.length === 1
      ? `meta l4proto ${p} dnat to ${addrPort(list[0])}`
      : `meta l4proto ${p} dnat ${a} to numgen random mod ${list.length} map { ${list.map((e, i) => `${i} : ${endpointValue(e)}`).join(', ')} }`);
    out.push({ name: name[kind], rules });
  }
  if (affinity && affSets.size) {
    const record: string[] = [];
    for (const [set, e] of [...affSets].sort(([x], [y]) => (x < y ? -1 : 1))) {
      sets.push({ name: set, kind: 'set', spec: { keyword: 'type', key: f.addrType, size: 65535, flags: ['dynamic', 'timeout'], timeout: s.affinityTimeoutSeconds } });
      record.push(`${a} daddr ${canonicalIP(e.ip)} th dport ${e.port} update @${set} { ${a} saddr }`);
    }
    out.push({ name: name.record, rules: record });
    for (const ip of [...fe.clusterIP, ...fe.externals]) elements.push({ set: maps.affinityRecord, key: fe.svcKey(ip), value: `jump ${name.record}` });
    if (s.nodePort) elements.push({ set: maps.affinityRecordNodePorts, key: fe.npKey, value: `jump ${name.record}` });
  }
  return { chains: out, sets, elements, shared: [] };
}
