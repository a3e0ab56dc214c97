// A stand-in for iptables(-legacy) holding the IPVS mode's few chains, for
// fast tests: `iptables-restore --noflush` batches are parsed with the
// mode's rule model (rules of any other shape are refused, as a tool refuses
// what it cannot read) and applied per table all-or-nothing; a rule naming a
// set that does not exist is refused, as the kernel does; `iptables-save`
// prints the tables as iptables-legacy-save does (built-in chains first,
// then the others by name). chainVerdict() walks a chain for the tracer.
import type { Family } from '../../proxy/model.ts';
import { parseRule, renderRule, type IptRule, type Table } from './iptables.ts';

const builtins: Readonly<Record<Table, readonly string[]>> = {
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
};

type Chains = Map<string, IptRule[]>;

function emptyTable(t: Table): Chains {
  return new Map(builtins[t].map((c) => [c, []]));
}

export class FakeIptables {
  /** family → table → chain → rules. */
  readonly tables = new Map<Family, Map<Table, Chains>>([4, 6].map((f) => [f as Family, new Map((['mangle', 'nat', 'filter'] as const).map((t) => [t, emptyTable(t)]))]));
  private readonly setExists: (name: string) => boolean;

  constructor(setExists: (name: string) => boolean) {
    this.setExists = setExists;
  }

  /** Sets the rules of both families name (ipset destroy refuses these). */
  setsInUse(): Set<string> {
    const out = new Set<string>();
    for (const t of this.tables.values()) {
      for (const chains of t.values()) {
        for (const rules of chains.values()) {
          for (const r of rules) {
            for (const m of r.matches) if (m.kind === 'set') out.add(m.name);
            if (r.target.kind === 'SET') out.add(r.target.set);
          }
        }
      }
    }
    return out;
  }

  /** Applies an `iptables-restore --noflush` batch; throws with the tool's kind of message on the first problem. */
  restore(family: Family, batch: string): void {
    const fam = this.tables.get(family)!;
    let table: Table | undefined;
    let work: Chains | undefined;
    const lines = batch.split('\n');
    lines.forEach((line, i) => {
      const fail = (why: string): never => { throw new Error(`line ${i + 1} failed: ${why}: ${line}`); };
      if (line === '' || line.startsWith('#')) return;
      if (line.startsWith('*')) {
        table = line.slice(1) as Table;
        if (!(table in builtins)) fail(`unknown table ${table}`);
        work = new Map([...fam.get(table)!].map(([k, v]) => [k, [...v]]));
        return;
      }
      if (!table || !work) fail('no table');
      const w = work!;
      if (line === 'COMMIT') {
        fam.set(table!, w);
        table = undefined;
        work = undefined;
        return;
      }
      let m: RegExpExecArray | null;
      if ((m = /^:(\S+) (\S+) \[\d+:\d+\]$/.exec(line))) {
        w.set(m[1], []); // a user chain is created or flushed (--noflush)
        return;
      }
      if ((m = /^-X (\S+)$/.exec(line))) {
        if (!w.has(m[1]) || builtins[table!].includes(m[1])) fail(`no chain ${m[1]}`);
        for (const rules of w.values()) if (rules.some((r) => r.target.kind === 'jump' && r.target.chain === m![1])) fail(`chain ${m[1]} is still referenced`);
        w.delete(m[1]);
        return;
      }
      if ((m = /^(-A|-D) (\S+) (.*)$/.exec(line)) || (m = /^(-I) (\S+) 1 (.*)$/.exec(line))) {
        const rules = w.get(m[2]);
        if (!rules) fail(`no chain ${m[2]}`);
        const rule = parseRule(m[3]);
        for (const x of rule.matches) if (x.kind === 'set' && !this.setExists(x.name)) fail(`Set ${x.name} doesn't exist`);
        if (rule.target.kind === 'SET' && !this.setExists(rule.target.set)) fail(`Set ${rule.target.set} doesn't exist`);
        if (rule.target.kind === 'jump' && !w.has(rule.target.chain)) fail(`Couldn't load target ${rule.target.chain}`);
        if (m[1] === '-A') rules!.push(rule);
        else if (m[1] === '-I') rules!.unshift(rule);
        else {
          const k = rules!.findIndex((r) => renderRule(r) === m![3]);
          if (k < 0) fail('Bad rule (does a matching rule exist in that chain?)');
          rules!.splice(k, 1);
        }
        return;
      }
      fail('unknown command');
    });
    if (table) throw new Error(`COMMIT expected at line ${lines.length}`);
  }

  /** What iptables-legacy-save prints (without its comment lines and counters' values). */
  save(family: Family, only?: Table): string {
    const out: string[] = [];
    for (const [t, chains] of this.tables.get(family)!) {
      if (only && t !== only) continue;
      const user = [...chains.keys()].filter((c) => !builtins[t].includes(c)).sort();
      const order = [...builtins[t], ...user];
      out.push(`*${t}`);
      for (const c of builtins[t]) out.push(`:${c} ACCEPT [0:0]`);
      for (const c of user) out.push(`:${c} - [0:0]`);
      for (const c of order) for (const r of chains.get(c)!) out.push(`-A ${c} ${renderRule(r)}`);
      out.push('COMMIT');
    }
    return `${out.join('\n')}\n`;
  }

  chain(family: Family, table: Table, name: string): readonly IptRule[] {
    return this.tables.get(family)!.get(table)!.get(name) ?? [];
  }
}

/** What a packet looks like to a rule. */
export interface PacketView {
  readonly src: string;
  readonly dst: string;
  readonly proto: 'tcp' | 'udp' | 'sctp';
  readonly dport: number;
  mark: number;
  /** IPVS has taken this connection (xt_ipvs). */
  readonly ipvs: boolean;
  readonly isLocal: (ip: string) => boolean;
  readonly inCIDR: (ip: string, cidr: string) => boolean;
  /** Set membership for `-m set` / `-j SET` (null when the packet is not a member; the member's mark when it is). */
  readonly member: (set: string, flags: string, packet: PacketView) => { readonly skbmark?: { value: number; mask: number } } | null;
}

export type ChainResult =
  | { readonly kind: 'continue' }
  | { readonly kind: 'accept' | 'drop' | 'masquerade' }
  | { readonly kind: 'reject'; readonly with: string };

/** Walks one chain (and the chains it jumps to) as the kernel does; RETURN and the end of a chain continue the caller. */
export function chainVerdict(fw: FakeIptables, family: Family, table: Table, chain: string, p: PacketView, depth = 0): ChainResult {
  if (depth > 16) throw new Error(`chain loop at ${chain}`);
  for (const r of fw.chain(family, table, chain)) {
    if (!matches(r, p)) continue;
    const t = r.target;
    switch (t.kind) {
      case 'jump': {
        const v = chainVerdict(fw, family, table, t.chain, p, depth + 1);
        if (v.kind !== 'continue') return v;
        break;
      }
      case 'RETURN':
        return { kind: 'continue' };
      case 'ACCEPT':
        return { kind: 'accept' };
      case 'DROP':
        return { kind: 'drop' };
      case 'REJECT':
        return { kind: 'reject', with: t.with };
      case 'MASQUERADE':
        return { kind: 'masquerade' };
      case 'MARK': {
        const [v, m] = t.xmark.split('/').map((x) => parseInt(x, 16));
        p.mark = ((p.mark & ~m) ^ v) >>> 0;
        break;
      }
      case 'SET': {
        const member = p.member(t.set, t.flags, p);
        if (member?.skbmark) p.mark = ((p.mark & ~member.skbmark.mask) ^ member.skbmark.value) >>> 0;
        break;
      }
    }
  }
  return { kind: 'continue' };
}

function matches(r: IptRule, p: PacketView): boolean {
  if (r.src && p.inCIDR(p.src, r.src.cidr) === Boolean(r.src.negate)) return false;
  if (r.proto && r.proto !== p.proto) return false;
  for (const m of r.matches) {
    switch (m.kind) {
      case 'comment':
        break;
      case 'set':
        if ((p.member(m.name, m.flags, p) !== null) === Boolean(m.negate)) return false;
        break;
      case 'addrtype':
        if (p.isLocal(m.src ? p.src : p.dst) === Boolean(m.negate)) return false;
        break;
      case 'conntrack':
        // The tracer follows a new connection's first packet.
        if (m.states !== 'NEW') return false;
        break;
      case 'mark': {
        const [v, mask] = m.mark.split('/').map((x) => parseInt(x, 16));
        if ((((p.mark & mask) >>> 0) === v) === Boolean(m.negate)) return false;
        break;
      }
      case 'ipvs':
        if (!p.ipvs) return false;
        break;
    }
  }
  return true;
}
