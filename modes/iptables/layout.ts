// What each Service port contributes to the tables, in kube-proxy's chain
// layout: its own chains (KUBE-SVC/SVL/EXT/FW, and KUBE-SEP only where
// ClientIP affinity needs `-m recent` per endpoint) and its dispatch rules
// in the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, filter chains).
// Endpoints are DNATed straight from the Service chain: no per-endpoint
// chain, hairpin masquerade comes from the loopback ipset instead.
import { flatString } from '../../lib/flat-string.ts';
import type { Endpoint, Family, ServicePortState } from '../../proxy/model.ts';
import { hostCIDR, hostPort } from '../../lib/net.ts';
import { chains, loopbackSet, portProtoHash, sepChain } from './names.ts';
import { escapeQuoted, probability, renderMatch, renderRule, RuleSyntaxError, type L4, type Match, type Rule } from './rule.ts';
import { isPrintable, unsafeValue } from '../values.ts';

export type Table = 'nat' | 'filter' | 'mangle';

/** Per-family settings the layout needs (derived once from ModeOptions). */
export interface FamilyOptions {
  readonly family: Family;
  /** Cluster CIDR of this family ('' when unknown). */
  readonly clusterCIDR: string;
  readonly masqueradeAll: boolean;
  /** --nodeport-addresses of this family; empty = addrtype LOCAL. */
  readonly nodePortCIDRs: readonly string[];
  /** e.g. "0x4000". */
  readonly mark: string;
}

export interface ChainContent {
  readonly table: Table;
  readonly name: string;
  /**
   * The chain's rules as restore lines ("-A NAME spec"), newline-separated.
   * One string per chain, shared by the batch and the record, keeps memory
   * flat at 100k rules and makes "did this chain change" one comparison.
   */
  readonly text: string;
  readonly count: number;
}

export function chainContent(table: Table, name: string, rules: readonly Rule[]): ChainContent {
  // join() yields one flat string; += would keep every piece alive as a rope.
  const lines: string[] = [];
  for (const r of rules) lines.push(`-A ${name} ${renderRule(r)}`);
  return { table, name, text: lines.join('\n'), count: rules.length };
}

/** The shared chains a Service adds rules to, identified as "table chain". */
export const dispatchChains = [
  'nat KUBE-SERVICES',
  'nat KUBE-NODEPORTS',
  'filter KUBE-SERVICES',
  'filter KUBE-EXTERNAL-SERVICES',
  'filter KUBE-PROXY-FIREWALL',
  'filter KUBE-NODEPORTS',
] as const;
export type DispatchChain = (typeof dispatchChains)[number];

export interface ServiceOutput {
  readonly key: string;
  readonly chains: readonly ChainContent[];
  /** Rule specs per shared chain (only the chains with rules). */
  readonly dispatch: ReadonlyMap<DispatchChain, readonly string[]>;
  /** Entries of the loopback ipset ("ip,proto:port,ip"). */
  readonly loopback: readonly string[];
}

function l4(s: ServicePortState): L4 {
  return s.protocol.toLowerCase() as L4;
}

function comment(text: string): Match {
  return { kind: 'comment', text };
}

/** " -m statistic ..." for the rule that picks 1 of `remaining` endpoints, by `remaining` (a few shared strings). */
const statistics: string[] = [];
function statisticOf(remaining: number): string {
  return (statistics[remaining] ??= ` ${renderMatch({ kind: 'statistic', probability: probability(1 / remaining) })}`);
}

/**
 * A Service chain without affinity: the optional first rule, then one
 * DNAT rule per endpoint with `statistic` probabilities 1/(n-i). Written as
 * pieces joined once, the same text renderRule() gives: at 10,000 Services
 * × 10 endpoints these are 100k lines, and a Rule object plus rendered
 * words per line were most of a full sync's garbage (young-generation GC
 * time doubled the render under --max-semi-space-size=8).
 */
function dnatChain(chain: string, first: Rule | undefined, eps: readonly Endpoint[], name: string, proto: L4, loopback: Set<string>): ChainContent {
  const parts: string[] = [];
  if (first) parts.push('-A ', chain, ' ', renderRule(first));
  // Inside quotes the comment needs only quotes and backslashes escaped (quote()).
  const head = `-A ${chain} -p ${proto} -m comment --comment "${escapeQuoted(name)} -> `;
  const n = eps.length;
  for (let i = 0; i < n; i++) {
    const e = eps[i];
    const to = hostPort(e.ip, e.port);
    if (parts.length) parts.push('\n');
    parts.push(head, to, '"', i < n - 1 ? statisticOf(n - i) : '', ' -j DNAT --to-destination ', to);
    loopback.add(`${e.ip},${proto}:${e.port},${e.ip}`);
  }
  return { table: 'nat', name: chain, text: parts.join(''), count: n + (first ? 1 : 0) };
}

/**
 * Everything one service port writes. Throws (RuleSyntaxError) when the
 * port holds a value no rule may carry: the plan leaves that port out.
 */
export function serviceOutput(s: ServicePortState, o: FamilyOptions): ServiceOutput {
  const unsafe = unsafeValue(s);
  if (unsafe) throw new RuleSyntaxError(unsafe, s.key);
  const proto = l4(s);
  const hash = portProtoHash(s.name, s.protocol); // one sha256 per Service port
  // Comments carry the port's name only when it is plain text; otherwise its hash.
  const name = isPrintable(s.name) ? s.name : `service port ${hash}`;
  const svc = `KUBE-SVC-${hash}`;
  const svl = `KUBE-SVL-${hash}`;
  const ext = `KUBE-EXT-${hash}`;
  const fw = `KUBE-FW-${hash}`;
  const recentMask = o.family === 4 ? '255.255.255.255' : 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  const rejectWith = o.family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable';

  // Marking inline rather than jumping to KUBE-MARK-MASQ: same mark, and on
  // iptables-nft every jump adds a chain to the graph the kernel re-walks on
  // each commit (about 20% of a one-Service change at 10,000 Services).
  const markMasq: Rule['target'] = { kind: 'MARK', xmark: `${o.mark}/${o.mark}` };
  // KUBE-SVC holds the cluster-wide endpoints, KUBE-SVL this node's (when a Local policy uses them).
  const usesCluster = s.clusterEndpoints.length > 0;
  const usesLocal = s.localEndpoints.length > 0 && (s.internalPolicyLocal || s.externalPolicyLocal);
  const internalChain = s.internalPolicyLocal ? svl : svc;
  const hasInternal = s.internalEndpoints.length > 0;
  const hasExternal = s.externalEndpoints.length > 0;
  // Under externalTrafficPolicy Local, pods and the node reach the external
  // addresses through KUBE-EXT too (short-circuit to KUBE-SVC), even when
  // outside traffic has no local endpoint: that is dropped in filter.
  const shortCircuit = !s.masqueradeExternal && s.externalFromClusterEndpoints.length > 0;
  const usesExt = s.externallyReachable && (hasExternal || shortCircuit);
  const usesFw = usesExt && s.firewall;

  const out: ChainContent[] = [];
  const sepDone = new Set<string>();
  const loopback = new Set<string>();

  const masqClusterIP = (): Rule | undefined => {
    if (!o.masqueradeAll && !o.clusterCIDR) return undefined;
    return {
      ...(o.masqueradeAll ? {} : { src: { cidr: o.clusterCIDR, negate: true } }),
      dst: { cidr: hostCIDR(s.clusterIP) },
      proto,
      matches: [comment(`${name} cluster IP`), { kind: 'port', proto, dport: s.port }],
      target: markMasq,
    };
  };

  // A chain that picks one endpoint with `statistic` probabilities 1/(n-i).
  const endpointChain = (chainName: string, eps: readonly Endpoint[], first: Rule | undefined): void => {
    if (s.affinityTimeoutSeconds === 0) {
      out.push(dnatChain(chainName, first, eps, name, proto, loopback));
      return;
    }
    // Per-endpoint chains only where affinity needs them (`-m recent` per endpoint).
    const rules: Rule[] = first ? [first] : [];
    const seps = eps.map((e) => sepChain(s.name, s.protocol, e.ip, e.port));
    eps.forEach((e, i) => {
      rules.push({
        matches: [
          comment(`${name} -> ${hostPort(e.ip, e.port)}`),
          { kind: 'recent', mode: 'rcheck', seconds: s.affinityTimeoutSeconds, reap: true, name: seps[i], mask: recentMask },
        ],
        target: { kind: 'jump', chain: seps[i] },
      });
    });
    eps.forEach((e, i) => {
      const n = eps.length;
      const stat: Match[] = i < n - 1 ? [{ kind: 'statistic', probability: probability(1 / (n - i)) }] : [];
      const to = hostPort(e.ip, e.port);
      rules.push({ matches: [comment(`${name} -> ${to}`), ...stat], target: { kind: 'jump', chain: seps[i] } });
      loopback.add(`${e.ip},${proto}:${e.port},${e.ip}`);
      if (!sepDone.has(seps[i])) {
        sepDone.add(seps[i]);
        out.push(chainContent('nat', seps[i], [{
          proto,
          matches: [comment(name), { kind: 'recent', mode: 'set', name: seps[i], mask: recentMask }],
          target: { kind: 'DNAT', to },
        }]));
      }
    });
    out.push(chainContent('nat', chainName, rules));
  };

  if (usesCluster) endpointChain(svc, s.clusterEndpoints, s.internalPolicyLocal ? undefined : masqClusterIP());
  if (usesLocal) endpointChain(svl, s.localEndpoints, s.internalPolicyLocal ? masqClusterIP() : undefined);

  if (usesExt) {
    const rules: Rule[] = [];
    if (s.masqueradeExternal) {
      rules.push({ matches: [comment(`masquerade traffic for ${name} external destinations`)], target: markMasq });
      rules.push({ matches: [], target: { kind: 'jump', chain: svc } });
    } else {
      // Traffic from inside the cluster short-circuits to all endpoints:
      // only traffic from outside must stay on this node.
      if (shortCircuit) {
        if (o.clusterCIDR) {
          rules.push({ src: { cidr: o.clusterCIDR }, matches: [comment(`pod traffic for ${name} external destinations`)], target: { kind: 'jump', chain: svc } });
        }
        rules.push({ matches: [comment(`masquerade LOCAL traffic for ${name} external destinations`), { kind: 'addrtype', src: 'LOCAL' }], target: markMasq });
        rules.push({ matches: [comment(`route LOCAL traffic for ${name} external destinations`), { kind: 'addrtype', src: 'LOCAL' }], target: { kind: 'jump', chain: svc } });
      }
      if (hasExternal) rules.push({ matches: [], target: { kind: 'jump', chain: svl } });
    }
    out.push(chainContent('nat', ext, rules));
  }
  if (usesFw) {
    const rules: Rule[] = s.firewallSources.map((cidr) =>
      ({ src: { cidr }, matches: [comment(`${name} loadbalancer IP`)], target: { kind: 'jump', chain: ext } }));
    out.push(chainContent('nat', fw, rules));
  }

  // Dispatch rules in the shared chains.
  const d = new Map<DispatchChain, string[]>();
  const add = (c: DispatchChain, r: Rule): void => {
    let list = d.get(c);
    if (!list) d.set(c, (list = []));
    list.push(renderRule(r));
  };
  const portMatch = (port: number): Match => ({ kind: 'port', proto, dport: port });
  const toIP = (ip: string, what: string, target: Rule['target'], table: DispatchChain): void =>
    add(table, { dst: { cidr: hostCIDR(ip) }, proto, matches: [comment(`${name} ${what}`), portMatch(s.port)], target });

  const why = s.noEndpointVerdict === 'reject' ? 'has no endpoints' : 'has no local endpoints';
  // A refusal is a TCP reset for TCP (the kernel rate-limits ICMP per client host), ICMP otherwise.
  const filterTarget: Rule['target'] = s.noEndpointVerdict === 'drop' ? { kind: 'DROP' }
    : { kind: 'REJECT', with: proto === 'tcp' ? 'tcp-reset' : rejectWith };

  if (hasInternal) toIP(s.clusterIP, 'cluster IP', { kind: 'jump', chain: internalChain }, 'nat KUBE-SERVICES');
  else toIP(s.clusterIP, why, filterTarget, 'filter KUBE-SERVICES');

  // DNAT (nat) for whoever has endpoints; traffic still aimed at the
  // external address after nat (outside traffic without endpoints) meets the filter verdict.
  const externalTarget: Rule['target'] = { kind: 'jump', chain: ext };
  for (const ip of s.externalIPs) {
    if (usesExt) toIP(ip, 'external IP', externalTarget, 'nat KUBE-SERVICES');
    if (!hasExternal) toIP(ip, why, filterTarget, 'filter KUBE-EXTERNAL-SERVICES');
  }
  for (const ip of s.loadBalancerIPs) {
    if (usesExt) toIP(ip, 'loadbalancer IP', usesFw ? { kind: 'jump', chain: fw } : externalTarget, 'nat KUBE-SERVICES');
    if (!hasExternal) toIP(ip, why, filterTarget, 'filter KUBE-EXTERNAL-SERVICES');
  }
  if (s.nodePort > 0) {
    if (usesExt) add('nat KUBE-NODEPORTS', { proto, matches: [comment(name), portMatch(s.nodePort)], target: externalTarget });
    if (hasExternal) {
      // no filter verdict: outside traffic is answered through KUBE-EXT
    } else if (o.nodePortCIDRs.length === 0) {
      add('filter KUBE-EXTERNAL-SERVICES', { proto, matches: [comment(`${name} ${why}`), { kind: 'addrtype', dst: 'LOCAL' }, portMatch(s.nodePort)], target: filterTarget });
    } else {
      for (const cidr of o.nodePortCIDRs) {
        add('filter KUBE-EXTERNAL-SERVICES', { dst: { cidr }, proto, matches: [comment(`${name} ${why}`), portMatch(s.nodePort)], target: filterTarget });
      }
    }
  }
  if (usesFw) {
    for (const ip of s.loadBalancerIPs) {
      add('filter KUBE-PROXY-FIREWALL', {
        dst: { cidr: hostCIDR(ip) }, proto,
        matches: [comment(`${name} traffic not accepted by ${fw}`), portMatch(s.port)],
        target: { kind: 'DROP' },
      });
    }
  }
  if (s.healthCheckNodePort > 0) {
    add('filter KUBE-NODEPORTS', {
      proto: 'tcp',
      matches: [comment(`${name} health check node port`), { kind: 'port', proto: 'tcp', dport: s.healthCheckNodePort }],
      target: { kind: 'ACCEPT' },
    });
  }
  // Kept in the record until the Service changes: one piece each, not a concatenation tree.
  return { key: s.key, chains: out, dispatch: d, loopback: Array.from(loopback, flatString) };
}

/** Chains kproxy owns whatever the Services are (table, name). */
export const fixedChains: readonly { table: Table; name: string }[] = [
  { table: 'nat', name: chains.services },
  { table: 'nat', name: chains.nodePorts },
  { table: 'nat', name: chains.postrouting },
  { table: 'nat', name: chains.markMasq },
  { table: 'filter', name: chains.services },
  { table: 'filter', name: chains.externalServices },
  { table: 'filter', name: chains.nodePorts },
  { table: 'filter', name: chains.firewall },
  { table: 'filter', name: chains.forward },
  // One canary per table kproxy writes, as kube-proxy keeps; each holds a
  // rule so that a flush of the table's rules (which leaves chains) shows.
  { table: 'mangle', name: chains.canary },
  { table: 'nat', name: chains.canary },
  { table: 'filter', name: chains.canary },
];

/** The canary's one rule (never reached: nothing jumps to the canary). */
export const canaryRule = renderRule({ matches: [comment('kproxy canary: a flush of this table removes this rule')], target: { kind: 'RETURN' } });

/** Contents of the fixed chains that do not depend on Services. */
export function fixedContents(o: FamilyOptions): ChainContent[] {
  const markAll = `${o.mark}/${o.mark}`;
  return [
    chainContent('nat', chains.markMasq, [{ matches: [], target: { kind: 'MARK', xmark: markAll } }]),
    chainContent('nat', chains.postrouting, [
      {
        matches: [comment('kubernetes service hairpin traffic requiring SNAT'), { kind: 'conntrack', states: 'DNAT' }, { kind: 'set', name: loopbackSet(o.family), flags: 'dst,dst,src' }],
        target: { kind: 'MASQUERADE', randomFully: false },
      },
      { matches: [{ kind: 'mark', negate: true, mark: markAll }], target: { kind: 'RETURN' } },
      { matches: [], target: { kind: 'MARK', xmark: `${o.mark}/0x0` } },
      { matches: [comment('kubernetes service traffic requiring SNAT')], target: { kind: 'MASQUERADE', randomFully: true } },
    ]),
    ...(['mangle', 'nat', 'filter'] as const).map((t): ChainContent => ({ table: t, name: chains.canary, text: `-A ${chains.canary} ${canaryRule}`, count: 1 })),
    chainContent('filter', chains.forward, [
      { matches: [{ kind: 'conntrack', states: 'INVALID' }], target: { kind: 'DROP' } },
      { matches: [comment('kubernetes forwarding rules'), { kind: 'mark', negate: false, mark: markAll }], target: { kind: 'ACCEPT' } },
      { matches: [comment('kubernetes forwarding conntrack rule'), { kind: 'conntrack', states: 'RELATED,ESTABLISHED' }], target: { kind: 'ACCEPT' } },
    ]),
  ];
}

/** Rules that always end nat KUBE-SERVICES: the jump to KUBE-NODEPORTS. */
export function servicesTail(o: FamilyOptions): string[] {
  const c = comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain');
  if (o.nodePortCIDRs.length === 0) {
    return [renderRule({ matches: [c, { kind: 'addrtype', dst: 'LOCAL' }], target: { kind: 'jump', chain: chains.nodePorts } })];
  }
  return o.nodePortCIDRs.map((cidr) => renderRule({ dst: { cidr }, matches: [c], target: { kind: 'jump', chain: chains.nodePorts } }));
}

/** Jumps from built-in chains into kproxy's chains (kube-proxy's set), prepended idempotently. */
export interface BuiltinJump {
  readonly table: Table;
  readonly from: string;
  readonly rule: string;
}

export function builtinJumps(): BuiltinJump[] {
  const newConn: Match = { kind: 'conntrack', states: 'NEW' };
  const j = (table: Table, from: string, to: string, text: string, ctNew: boolean): BuiltinJump => ({
    table, from, rule: renderRule({ matches: ctNew ? [newConn, comment(text)] : [comment(text)], target: { kind: 'jump', chain: to } }),
  });
  return [
    j('filter', 'INPUT', chains.externalServices, 'kubernetes externally-visible service portals', true),
    j('filter', 'FORWARD', chains.externalServices, 'kubernetes externally-visible service portals', true),
    j('filter', 'INPUT', chains.nodePorts, 'kubernetes health check service ports', false),
    j('filter', 'FORWARD', chains.services, 'kubernetes service portals', true),
    j('filter', 'OUTPUT', chains.services, 'kubernetes service portals', true),
    j('filter', 'FORWARD', chains.forward, 'kubernetes forwarding rules', false),
    j('filter', 'INPUT', chains.firewall, 'kubernetes load balancer firewall', true),
    j('filter', 'OUTPUT', chains.firewall, 'kubernetes load balancer firewall', true),
    j('filter', 'FORWARD', chains.firewall, 'kubernetes load balancer firewall', true),
    j('nat', 'OUTPUT', chains.services, 'kubernetes service portals', false),
    j('nat', 'PREROUTING', chains.services, 'kubernetes service portals', false),
    j('nat', 'POSTROUTING', chains.postrouting, 'kubernetes postrouting rules', false),
  ];
}
