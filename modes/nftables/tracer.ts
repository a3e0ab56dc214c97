// Follows a new connection's first packet through the fake kernel's kproxy
// table: filter (reject/drop) before DNAT, the nat chains, then postrouting
// (masquerade). `numgen random` forks the trace, so the answer is every
// possible destination: "TCP 10.0.0.5 → 172.30.0.41:80 goes to
// 10.180.0.4:80 or 10.180.0.5:80, masqueraded". It understands the rule
// forms kproxy writes, and fails loudly on anything else.
import { canonicalIP, hostPort, inCIDR } from '../../lib/net.ts';
import type { Family, Protocol } from '../../proxy/model.ts';
import { chains, tableName } from './layout.ts';
import type { FakeNftKernel, FakeTable } from './fake-kernel.ts';
import { splitTopLevel } from './objects.ts';

export interface Packet {
  readonly family: Family;
  readonly saddr: string;
  readonly daddr: string;
  readonly protocol: Protocol;
  readonly dport: number;
  /** 'node': sent by a process on the node (output hooks); otherwise it arrives (prerouting). */
  readonly from?: 'node' | 'outside';
}

export interface TraceEnv {
  /** Addresses the node owns (what `fib ... type local` matches). */
  readonly localAddresses: readonly string[];
}

export interface Outcome {
  readonly verdict: 'accept' | 'drop' | 'reject';
  /** How a reject answers: a TCP reset, or ICMP port-unreachable. */
  readonly rejectWith?: 'tcp-reset' | 'icmp';
  /** "ip:port" ("[ip6]:port") the connection is DNATed to. */
  readonly dnat?: string;
  readonly masquerade: boolean;
  /** Dynamic sets the packet path updates with the client address (affinity). */
  readonly updates: readonly string[];
}

interface St {
  saddr: string;
  daddr: string;
  proto: string;
  dport: string;
  origDaddr: string;
  origDport: string;
  mark: number;
  dnat?: string;
  masq: boolean;
  updates: string[];
  rejectWith?: 'tcp-reset' | 'icmp';
}

type Action =
  | { kind: 'next' }
  | { kind: 'jump' | 'goto'; chain: string }
  | { kind: 'return' }
  | { kind: 'verdict'; verdict: Outcome['verdict'] };

interface Branch {
  st: St;
  action: Action;
}

interface Final {
  st: St;
  how: 'return' | 'verdict';
  verdict?: Outcome['verdict'];
}

export class TraceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TraceError';
  }
}

function tokenize(rule: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < rule.length) {
    if (rule[i] === ' ') {
      i++;
    } else if (rule[i] === '{') {
      let depth = 0;
      let j = i;
      for (; j < rule.length; j++) {
        if (rule[j] === '{') depth++;
        if (rule[j] === '}' && --depth === 0) break;
      }
      out.push(rule.slice(i, j + 1));
      i = j + 1;
    } else {
      const j = rule.indexOf(' ', i);
      out.push(rule.slice(i, j < 0 ? rule.length : j));
      i = j < 0 ? rule.length : j;
    }
  }
  return out;
}

function matches(value: string, rhs: string): boolean {
  const items = rhs.startsWith('{') ? splitTopLevel(rhs.slice(1, -1)) : [rhs];
  return items.some((item) => (item.includes('/') && !item.includes(' . ') ? inCIDR(value, item) : item === value));
}

function anonMap(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of splitTopLevel(text.slice(1, -1))) {
    const i = e.indexOf(' : ');
    m.set(e.slice(0, i).trim(), e.slice(i + 3).trim());
  }
  return m;
}

function toAddrPort(value: string): string {
  const [ip, port] = value.split(' . ');
  return hostPort(ip, port);
}

class Tracer {
  private readonly t: FakeTable;
  private readonly env: TraceEnv;
  private depth = 0;

  constructor(t: FakeTable, env: TraceEnv) {
    this.t = t;
    this.env = { localAddresses: env.localAddresses.map(canonicalIP) };
  }

  private field(tokens: string[], i: number, ng: number | undefined): { get: (st: St) => string | undefined; next: number } | undefined {
    const [a, b, c, d] = tokens.slice(i, i + 4);
    if ((a === 'ip' || a === 'ip6') && (b === 'saddr' || b === 'daddr')) return { get: (st) => (b === 'saddr' ? st.saddr : st.daddr), next: i + 2 };
    if (a === 'meta' && b === 'l4proto') return { get: (st) => st.proto, next: i + 2 };
    if (a === 'meta' && b === 'mark') return { get: (st) => String(st.mark), next: i + 2 };
    if (a === 'th' && b === 'dport') return { get: (st) => st.dport, next: i + 2 };
    // "udp dport" carries an implicit "meta l4proto udp": no value for other protocols.
    if ((a === 'tcp' || a === 'udp' || a === 'sctp') && b === 'dport') return { get: (st) => (st.proto === a ? st.dport : undefined), next: i + 2 };
    if (a === 'numgen' && b === 'random' && c === 'mod') {
      if (ng === undefined) throw new TraceError('numgen outside a forked rule');
      return { get: () => String(ng), next: i + 4 };
    }
    if (a === 'ct' && b === 'original' && (c === 'ip' || c === 'ip6') && d === 'daddr') return { get: (st) => st.origDaddr, next: i + 4 };
    if (a === 'ct' && b === 'original' && c === 'proto-dst') return { get: (st) => st.origDport, next: i + 3 };
    if (a === 'fib' && (b === 'saddr' || b === 'daddr') && c === 'type') {
      return { get: (st) => (this.env.localAddresses.includes(b === 'saddr' ? st.saddr : st.daddr) ? 'local' : 'unicast'), next: i + 3 };
    }
    if (a === 'ct' && b === 'state') return { get: () => 'new', next: i + 2 };
    if (a === 'ct' && b === 'status') return { get: (st) => (st.dnat ? 'dnat' : ''), next: i + 2 };
    return undefined;
  }

  /** A field or a concatenation; its value is undefined when a protocol dependency fails. */
  private expr(tokens: string[], i: number, ng: number | undefined): { get: (st: St) => string | undefined; next: number } | undefined {
    const first = this.field(tokens, i, ng);
    if (!first) return undefined;
    const parts = [first.get];
    let next = first.next;
    while (tokens[next] === '.') {
      const f = this.field(tokens, next + 1, ng);
      if (!f) throw new TraceError(`cannot read a field at "${tokens.slice(next + 1).join(' ')}"`);
      parts.push(f.get);
      next = f.next;
    }
    return {
      get: (st) => {
        const values = parts.map((p) => p(st));
        return values.includes(undefined) ? undefined : values.join(' . ');
      },
      next,
    };
  }

  private lookup(ref: string): Map<string, string | undefined> {
    if (ref.startsWith('{')) return anonMap(ref);
    const s = this.t.sets.get(ref.slice(1));
    if (!s) throw new TraceError(`no set ${ref}`);
    return s.elements;
  }

  /** Evaluates one rule with numgen fixed to `ng`. */
  private rule(tokens: string[], st0: St, ng: number | undefined): Branch {
    const st: St = { ...st0, updates: [...st0.updates] };
    const noMatch: Branch = { st: st0, action: { kind: 'next' } };
    let i = 0;
    while (i < tokens.length) {
      const tok = tokens[i];
      if (tok === 'jump' || tok === 'goto') return { st, action: { kind: tok, chain: tokens[i + 1] } };
      if (tok === 'return') return { st, action: { kind: 'return' } };
      if (tok === 'accept' || tok === 'drop') return { st, action: { kind: 'verdict', verdict: tok } };
      if (tok === 'reject') {
        // "reject with tcp reset" carries an implicit "meta l4proto tcp".
        const reset = tokens[i + 1] === 'with' && tokens[i + 2] === 'tcp' && tokens[i + 3] === 'reset';
        if (reset && st.proto !== 'tcp') return noMatch;
        st.rejectWith = reset ? 'tcp-reset' : 'icmp';
        return { st, action: { kind: 'verdict', verdict: 'reject' } };
      }
      if (tok === 'masquerade') {
        st.masq = true;
        return { st, action: { kind: 'verdict', verdict: 'accept' } };
      }
      if (tok === 'dnat') {
        let j = i + 1;
        if (tokens[j] === 'ip' || tokens[j] === 'ip6') j++;
        if (tokens[j] !== 'to') throw new TraceError(`cannot read dnat in "${tokens.join(' ')}"`);
        j++;
        const e = this.expr(tokens, j, ng);
        if (!e) {
          st.dnat = tokens[j];
        } else {
          if (tokens[e.next] !== 'map') throw new TraceError(`dnat without map in "${tokens.join(' ')}"`);
          const key = e.get(st);
          if (key === undefined) return noMatch;
          const v = this.lookup(tokens[e.next + 1]).get(key);
          if (v === undefined) return noMatch;
          st.dnat = toAddrPort(v);
        }
        return { st, action: { kind: 'verdict', verdict: 'accept' } };
      }
      if (tok === 'update') {
        st.updates.push(tokens[i + 1].slice(1));
        i += 3;
        continue;
      }
      if (tok === 'meta' && tokens[i + 1] === 'mark' && tokens[i + 2] === 'set') {
        const op = tokens[i + 5];
        const v = Number(tokens[i + 6]);
        st.mark = op === '|' ? st.mark | v : st.mark ^ v;
        i += 7;
        continue;
      }
      const e = this.expr(tokens, i, ng);
      if (!e) throw new TraceError(`cannot read "${tokens.slice(i).join(' ')}"`);
      const value = e.get(st);
      if (value === undefined) return noMatch;
      let j = e.next;
      if (tokens[j] === 'vmap') {
        const v = this.lookup(tokens[j + 1]).get(value);
        if (v === undefined) return noMatch;
        const [kind, chain] = v.split(' ');
        if (kind === 'jump' || kind === 'goto') return { st, action: { kind, chain } };
        if (kind === 'return') return { st, action: { kind: 'return' } };
        return { st, action: { kind: 'verdict', verdict: kind as Outcome['verdict'] } };
      }
      if (tokens[j] === '&') {
        const masked = Number(value) & Number(tokens[j + 1]);
        if (tokens[j + 2] !== '==' || masked !== Number(tokens[j + 3])) return noMatch;
        i = j + 4;
        continue;
      }
      if (tokens[j]?.startsWith('@')) {
        if (!this.lookup(tokens[j]).has(value)) return noMatch;
        i = j + 1;
        continue;
      }
      const negate = tokens[j] === '!=';
      if (negate) j++;
      if (matches(value, tokens[j]) === negate) return noMatch;
      i = j + 1;
    }
    return { st, action: { kind: 'next' } };
  }

  private ruleBranches(rule: string, st: St): Branch[] {
    const tokens = tokenize(rule);
    const k = tokens.indexOf('numgen');
    if (k < 0) return [this.rule(tokens, st, undefined)];
    const n = Number(tokens[k + 3]);
    return Array.from({ length: n }, (_, ng) => this.rule(tokens, st, ng));
  }

  run(chain: string, from: number, st: St): Final[] {
    const c = this.t.chains.get(chain);
    if (!c) throw new TraceError(`no chain ${chain}`);
    if (++this.depth > 64) throw new TraceError(`chain loop at ${chain}`);
    try {
      for (let i = from; i < c.rules.length; i++) {
        const branches = this.ruleBranches(c.rules[i], st);
        if (branches.length === 1 && branches[0].action.kind === 'next') {
          st = branches[0].st;
          continue;
        }
        const out: Final[] = [];
        for (const b of branches) {
          const a = b.action;
          if (a.kind === 'next') out.push(...this.run(chain, i + 1, b.st));
          else if (a.kind === 'return') out.push({ st: b.st, how: 'return' });
          else if (a.kind === 'verdict') out.push({ st: b.st, how: 'verdict', verdict: a.verdict });
          else if (a.kind === 'goto') out.push(...this.run(a.chain, 0, b.st));
          else {
            for (const r of this.run(a.chain, 0, b.st)) {
              if (r.how === 'verdict') out.push(r);
              else out.push(...this.run(chain, i + 1, r.st));
            }
          }
        }
        return out;
      }
      return [{ st, how: 'return' }];
    } finally {
      this.depth--;
    }
  }
}

/** Every possible fate of a new connection's first packet. */
export function trace(kernel: FakeNftKernel, pkt: Packet, env: TraceEnv): Outcome[] {
  const t = kernel.table(pkt.family === 4 ? 'ip' : 'ip6', tableName);
  if (!t) throw new TraceError(`no table for family ${pkt.family}`);
  const tr = new Tracer(t, env);
  const fromNode = pkt.from === 'node';
  const st: St = {
    saddr: canonicalIP(pkt.saddr), daddr: canonicalIP(pkt.daddr), proto: pkt.protocol.toLowerCase(), dport: String(pkt.dport),
    origDaddr: canonicalIP(pkt.daddr), origDport: String(pkt.dport), mark: 0, masq: false, updates: [],
  };
  const outcomes = new Map<string, Outcome>();
  const finish = (s: St, verdict: Outcome['verdict']): void => {
    const o: Outcome = {
      verdict, ...(s.dnat ? { dnat: s.dnat } : {}), masquerade: s.masq, updates: [...new Set(s.updates)].sort(),
      ...(verdict === 'reject' && s.rejectWith ? { rejectWith: s.rejectWith } : {}),
    };
    outcomes.set(JSON.stringify(o), o);
  };
  for (const f of tr.run(fromNode ? chains.filterOutput : chains.filterPrerouting, 0, st)) {
    if (f.how === 'verdict' && f.verdict !== 'accept') {
      finish(f.st, f.verdict!);
      continue;
    }
    for (const n of tr.run(fromNode ? chains.natOutput : chains.natPrerouting, 0, f.st)) {
      if (n.how === 'verdict' && n.verdict !== 'accept') {
        finish(n.st, n.verdict!);
        continue;
      }
      const post: St = { ...n.st };
      if (post.dnat) {
        const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(post.dnat)!;
        post.daddr = m[1];
        post.dport = m[2];
      }
      for (const p of tr.run(chains.natPostrouting, 0, post)) finish(p.st, p.how === 'verdict' ? p.verdict! : 'accept');
    }
  }
  return [...outcomes.values()].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

/** Short text per outcome, e.g. "10.180.0.4:80 masq", "reject", "drop", "accept" (no DNAT). */
export function describe(outcomes: readonly Outcome[]): string[] {
  return [...new Set(outcomes.map((o) => (o.verdict !== 'accept' ? o.verdict : `${o.dnat ?? 'accept'}${o.masquerade ? ' masq' : ''}`)))].sort();
}

/** Adds the client to the dynamic sets the outcome's path updates (what the kernel does for affinity). */
export function remember(kernel: FakeNftKernel, pkt: Packet, outcome: Outcome): void {
  const t = kernel.table(pkt.family === 4 ? 'ip' : 'ip6', tableName)!;
  for (const name of outcome.updates) t.sets.get(name)!.elements.set(canonicalIP(pkt.saddr), undefined);
}
