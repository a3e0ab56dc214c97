// Follows a new connection's first packet through parsed iptables tables
// (nat then filter, as the kernel's hooks order them) and reports every
// possible outcome with its probability: where it is DNATed, whether it is
// masqueraded, and whether it is accepted, dropped or rejected.
import { inCIDR } from '../../lib/net.ts';
import { parseRule, tokenize, type Match, type Rule } from './rule.ts';
import type { FakeSet, Tables } from './fake-kernel.ts';

export interface TracePacket {
  readonly src?: string;
  readonly dst: string;
  readonly proto: 'tcp' | 'udp' | 'sctp';
  readonly dport: number;
  /** 'node': sent by a process on the node; 'external': arrives from the network (or a pod). */
  readonly from: 'node' | 'external';
}

export interface TraceOutcome {
  readonly probability: number;
  readonly verdict: 'accept' | 'drop' | 'reject';
  /** "ip:port" the connection is DNATed to, if any. */
  readonly dnat?: string;
  readonly masquerade: boolean;
  /** For a reject: its --reject-with (tcp-reset, icmp-port-unreachable, ...). */
  readonly rejectWith?: string;
}

interface Pkt {
  src: string;
  dst: string;
  dport: number;
  proto: string;
  mark: number;
  dnat?: string;
  masq: boolean;
  prob: number;
  rejectWith?: string;
}

type Verdict = 'continue' | 'ACCEPT' | 'DROP' | 'REJECT' | 'DNAT' | 'MASQUERADE';

function splitHostPort(hp: string): [string, number] {
  const m = hp.match(/^\[(.*)\]:(\d+)$/) ?? hp.match(/^(.*):(\d+)$/);
  if (!m) throw new Error(`bad DNAT destination ${hp}`);
  return [m[1], Number(m[2])];
}

function parseMark(s: string): [number, number] {
  const [v, m = '0xffffffff'] = s.split('/');
  return [Number(v), Number(m)];
}

export function trace(tables: Tables, sets: ReadonlyMap<string, FakeSet>, local: ReadonlySet<string>, p: TracePacket): TraceOutcome[] {
  const cache = new Map<string, Rule>();
  const parsed = (spec: string): Rule => {
    let r = cache.get(spec);
    if (!r) cache.set(spec, (r = parseRule(tokenize(spec), spec)));
    return r;
  };
  const isLocal = (ip: string): boolean => local.has(ip) || ip === '127.0.0.1' || ip === '::1';

  // Probability that the packet matches (statistic is the only non-certain match).
  const matchProb = (r: Rule, k: Pkt): number => {
    if (r.src && inCIDR(k.src, r.src.cidr) === !!r.src.negate) return 0;
    if (r.dst && inCIDR(k.dst, r.dst.cidr) === !!r.dst.negate) return 0;
    if (r.proto && r.proto !== k.proto) return 0;
    let prob = 1;
    for (const m of r.matches) {
      const x = matchOne(m, k);
      if (x === 0) return 0;
      prob *= x;
    }
    return prob;
  };
  const matchOne = (m: Match, k: Pkt): number => {
    switch (m.kind) {
      case 'comment':
        return 1;
      case 'port':
        return m.proto === k.proto && (m.dport === undefined || m.dport === k.dport) ? 1 : 0;
      case 'addrtype':
        if (m.src === 'LOCAL' && !isLocal(k.src)) return 0;
        if (m.dst === 'LOCAL' && !isLocal(k.dst)) return 0;
        return 1;
      case 'statistic':
        return Number(m.probability);
      case 'recent':
        return m.mode === 'set' ? 1 : 0; // a new client has no affinity entry yet
      case 'mark': {
        const [v, mask] = parseMark(m.mark);
        return ((k.mark & mask) === v) !== m.negate ? 1 : 0;
      }
      case 'conntrack': {
        const states = m.states.split(',');
        return states.includes('NEW') || (states.includes('DNAT') && k.dnat) ? 1 : 0;
      }
      case 'set': {
        const set = sets.get(m.name);
        if (!set) return 0;
        const [a, b, c] = m.flags.split(',');
        const pick = (dir: string): string => (dir === 'src' ? k.src : k.dst);
        return set.entries.has(`${pick(a)},${k.proto}:${b === 'src' ? 0 : k.dport},${pick(c)}`) ? 1 : 0;
      }
    }
  };

  const run = (table: string, chain: string, start: Pkt, depth: number): { k: Pkt; v: Verdict }[] => {
    if (depth > 32) throw new Error(`jump loop at ${table} ${chain}`);
    const rules = tables.get(table)?.get(chain);
    if (!rules) throw new Error(`trace reached missing chain ${table} ${chain}`);
    const done: { k: Pkt; v: Verdict }[] = [];
    let active: Pkt[] = [start];
    for (const spec of rules) {
      const r = parsed(spec);
      const next: Pkt[] = [];
      for (const k of active) {
        const pm = matchProb(r, k);
        if (pm < 1) next.push({ ...k, prob: k.prob * (1 - pm) });
        if (pm <= 0) continue;
        const q: Pkt = { ...k, prob: k.prob * pm };
        const t = r.target;
        switch (t.kind) {
          case 'jump':
            for (const res of run(table, t.chain, q, depth + 1)) {
              if (res.v === 'continue') next.push(res.k);
              else done.push(res);
            }
            break;
          case 'RETURN':
            done.push({ k: q, v: 'continue' });
            break;
          case 'MARK': {
            const [v, mask] = parseMark(t.xmark);
            q.mark = ((q.mark & ~mask) ^ v) >>> 0;
            next.push(q);
            break;
          }
          case 'DNAT': {
            const [ip, port] = splitHostPort(t.to);
            done.push({ k: { ...q, dnat: t.to, dst: ip, dport: port }, v: 'DNAT' });
            break;
          }
          case 'MASQUERADE':
            done.push({ k: { ...q, masq: true }, v: 'MASQUERADE' });
            break;
          case 'REJECT':
            done.push({ k: { ...q, rejectWith: t.with }, v: 'REJECT' });
            break;
          default:
            done.push({ k: q, v: t.kind });
        }
      }
      active = next;
    }
    for (const k of active) done.push({ k, v: 'continue' });
    return done;
  };

  const src = p.src ?? [...local][0];
  let pkts: { k: Pkt; v: Verdict }[] = [{ k: { src, dst: p.dst, dport: p.dport, proto: p.proto, mark: 0, masq: false, prob: 1 }, v: 'continue' }];
  const outcomes: TraceOutcome[] = [];
  const finish = (k: Pkt, verdict: TraceOutcome['verdict']): void => {
    outcomes.push({
      probability: k.prob, verdict, masquerade: k.masq, ...(k.dnat ? { dnat: k.dnat } : {}),
      ...(verdict === 'reject' && k.rejectWith ? { rejectWith: k.rejectWith } : {}),
    });
  };
  const stage = (table: string, chain: (k: Pkt) => string | undefined): void => {
    const next: { k: Pkt; v: Verdict }[] = [];
    for (const { k } of pkts) {
      const c = chain(k);
      if (!c) {
        next.push({ k, v: 'continue' });
        continue;
      }
      for (const res of run(table, c, k, 0)) {
        if (res.v === 'DROP') finish(res.k, 'drop');
        else if (res.v === 'REJECT') finish(res.k, 'reject');
        else next.push(res);
      }
    }
    pkts = next;
  };
  if (p.from === 'external') {
    stage('nat', () => 'PREROUTING');
    stage('filter', (k) => (isLocal(k.dst) ? 'INPUT' : 'FORWARD'));
  } else {
    stage('nat', () => 'OUTPUT');
    stage('filter', () => 'OUTPUT');
  }
  stage('nat', (k) => (isLocal(k.dst) ? undefined : 'POSTROUTING'));
  for (const { k } of pkts) finish(k, 'accept');

  // Merge identical outcomes.
  const merged = new Map<string, TraceOutcome>();
  for (const o of outcomes) {
    if (o.probability <= 1e-12) continue;
    const key = `${o.verdict} ${o.dnat ?? ''} ${o.masquerade}`;
    const prev = merged.get(key);
    merged.set(key, prev ? { ...prev, probability: prev.probability + o.probability } : o);
  }
  return [...merged.values()].sort((a, b) => (a.dnat ?? '').localeCompare(b.dnat ?? '') || a.verdict.localeCompare(b.verdict));
}
