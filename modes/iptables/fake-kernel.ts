// An in-memory iptables + ipset for tests. It takes the same batches the
// real tools take (through an Exec), parses every rule with the typed model
// (unknown syntax is an error, as in the kernel tool), applies each table
// all-or-nothing with --noflush semantics, and dumps iptables-save-like text.
// trace() (tracer.ts) follows a packet through what it holds.
import { ToolError, type Exec, type ExecResult } from '../../lib/exec.ts';
import type { Family } from '../../proxy/model.ts';
import { parseRule, renderRule, tokenize } from './rule.ts';
import { trace, type TraceOutcome, type TracePacket } from './tracer.ts';

export const builtinChains: Readonly<Record<string, readonly string[]>> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
};

/** table → chain → canonical rule specs. */
export type Tables = Map<string, Map<string, string[]>>;

export interface FakeSet {
  readonly family: 'inet' | 'inet6';
  readonly type: string;
  entries: Set<string>;
}

function emptyTables(): Tables {
  const t: Tables = new Map();
  for (const [name, chains] of Object.entries(builtinChains)) t.set(name, new Map(chains.map((c) => [c, []])));
  return t;
}

function cloneTable(t: Map<string, string[]>): Map<string, string[]> {
  return new Map([...t].map(([k, v]) => [k, [...v]]));
}

class RestoreError extends Error {}

function jumpTarget(spec: string): string | undefined {
  const w = tokenize(spec);
  const i = w.indexOf('-j');
  const t = w[i + 1];
  return t && !['ACCEPT', 'DROP', 'RETURN', 'DNAT', 'MARK', 'MASQUERADE', 'REJECT'].includes(t) ? t : undefined;
}

export class FakeKernel {
  readonly families = new Map<Family, Tables>([[4, emptyTables()], [6, emptyTables()]]);
  readonly sets = new Map<string, FakeSet>();
  /** Addresses that are LOCAL for addrtype (the node's own). */
  readonly localAddresses: Set<string>;
  /** Every batch received, for tests that look at batch sizes. */
  readonly log: { tool: string; args: readonly string[]; input: string }[] = [];
  /** When set, the next restore fails (to test recovery). */
  failNextRestore = false;

  constructor(localAddresses: readonly string[] = ['192.168.0.2']) {
    this.localAddresses = new Set(localAddresses);
  }

  readonly exec: Exec = async (tool, args, input = '') => {
    this.log.push({ tool, args, input });
    const base = tool.replace(/^.*\//, '');
    const m = base.match(/^(ip6?tables)(?:-(nft|legacy))?(-save|-restore)?$/);
    try {
      if (m) {
        const family: Family = m[1] === 'ip6tables' ? 6 : 4;
        if (m[3] === '-restore') return this.restore(family, input);
        if (m[3] === '-save') return ok(this.dump(family, argValue(args, '-t')));
        return this.command(family, args);
      }
      if (base === 'ipset') {
        if (args[0] === 'restore') return this.ipsetRestore(input, args.includes('-exist'));
        if (args[0] === 'destroy') {
          if (!this.sets.delete(args[1])) throw new ToolError(tool, args, 1, `ipset v7: The set with the given name does not exist`);
          return ok('');
        }
      }
    } catch (e) {
      if (e instanceof ToolError) throw e;
      throw new ToolError(tool, args, e instanceof RestoreError ? 1 : 2, String(e instanceof Error ? e.message : e));
    }
    throw new ToolError(tool, args, 127, `${tool}: not available in the fake kernel`);
  };

  private command(family: Family, args: readonly string[]): ExecResult {
    if (args[0] === '--version') return ok('iptables v1.8.9 (nf_tables)\n');
    const a = args.filter((x) => x !== '-w');
    let table = 'filter';
    if (a[0] === '-t') {
      table = a[1];
      a.splice(0, 2);
    }
    const t = this.families.get(family)!.get(table)!;
    const [op, chain, ...rest] = a;
    const rules = t.get(chain);
    if (!rules) throw new ToolError('iptables', args, 1, `iptables: No chain/target/match by that name.`);
    if (op === '-S') return ok(`-N ${chain}\n${rules.map((r) => `-A ${chain} ${r}\n`).join('')}`);
    if (op === '-C' || op === '-I' || op === '-D') {
      let pos = 1;
      let words = rest;
      if (op === '-I' && /^\d+$/.test(rest[0] ?? '')) {
        pos = Number(rest[0]);
        words = rest.slice(1);
      }
      const spec = renderRule(parseRule(words));
      const target = jumpTarget(spec);
      if (target && !t.has(target)) throw new ToolError('iptables', args, 2, `Couldn't load target \`${target}'`);
      const at = rules.indexOf(spec);
      if (op === '-C') {
        if (at < 0) throw new ToolError('iptables', args, 1, 'iptables: Bad rule (does a matching rule exist in that chain?).');
      } else if (op === '-D') {
        if (at < 0) throw new ToolError('iptables', args, 1, 'iptables: Bad rule (does a matching rule exist in that chain?).');
        rules.splice(at, 1);
      } else rules.splice(pos - 1, 0, spec);
      return ok('');
    }
    throw new ToolError('iptables', args, 2, `unsupported command ${op}`);
  }

  /** Applies a restore batch: each table's section is committed all-or-nothing. */
  private restore(family: Family, input: string): ExecResult {
    if (this.failNextRestore) {
      this.failNextRestore = false;
      throw new RestoreError('injected failure');
    }
    const tables = this.families.get(family)!;
    let name = '';
    let work: Map<string, string[]> | undefined;
    let lineNo = 0;
    const fail = (msg: string): never => {
      throw new RestoreError(`line ${lineNo}: ${msg}`);
    };
    for (const raw of input.split('\n')) {
      lineNo++;
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      if (line.startsWith('*')) {
        name = line.slice(1);
        const cur = tables.get(name);
        if (!cur) fail(`unknown table ${name}`);
        work = cloneTable(cur!);
        continue;
      }
      if (!work) fail('rule outside a table');
      const w = work!;
      if (line === 'COMMIT') {
        tables.set(name, w);
        work = undefined;
        continue;
      }
      if (line.startsWith(':')) {
        const chain = line.slice(1).split(' ')[0];
        if (builtinChains[name].includes(chain)) continue; // policy line
        w.set(chain, []); // creates, or flushes under --noflush
        continue;
      }
      const words = tokenize(line);
      const [op, chain] = words;
      const rules = w.get(chain);
      if (!rules) fail(`chain ${chain} does not exist`);
      if (op === '-X') {
        if (builtinChains[name].includes(chain)) fail(`cannot delete built-in chain ${chain}`);
        if (rules!.length) fail(`chain ${chain} is not empty`);
        for (const [c, rs] of w) for (const r of rs) if (jumpTarget(r) === chain) fail(`chain ${chain} is still referenced from ${c}`);
        w.delete(chain);
        continue;
      }
      let rest = words.slice(2);
      let pos = 0;
      if (op === '-I' && /^\d+$/.test(rest[0] ?? '')) {
        pos = Number(rest[0]);
        rest = rest.slice(1);
      }
      let spec: string;
      try {
        spec = renderRule(parseRule(rest, line));
      } catch (e) {
        return fail(String(e instanceof Error ? e.message : e));
      }
      const target = jumpTarget(spec);
      if (target && !w.has(target)) fail(`jump to missing chain ${target}`);
      const setMatch = spec.match(/--match-set (\S+)/);
      if (setMatch && !this.sets.has(setMatch[1])) fail(`set ${setMatch[1]} does not exist`);
      if (op === '-A') rules!.push(spec);
      else if (op === '-I') {
        const at = pos || 1;
        if (at > rules!.length + 1) fail(`index of insertion too big`);
        rules!.splice(at - 1, 0, spec);
      } else if (op === '-D') {
        const at = rules!.indexOf(spec);
        if (at < 0) fail(`Bad rule (does a matching rule exist in that chain?)`);
        rules!.splice(at, 1);
      } else fail(`unsupported command ${op}`);
    }
    if (work) fail('missing COMMIT');
    return ok('');
  }

  private ipsetRestore(input: string, exist: boolean): ExecResult {
    const next = new Map([...this.sets].map(([k, v]) => [k, { ...v, entries: new Set(v.entries) }]));
    for (const raw of input.split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const w = line.split(/\s+/);
      const [op, name] = w;
      const set = next.get(name);
      const need = (): FakeSet => {
        if (!set) throw new RestoreError(`ipset: set ${name} does not exist`);
        return set;
      };
      if (op === 'create') {
        if (set && !exist) throw new RestoreError(`ipset: set ${name} already exists`);
        const fi = w.indexOf('family');
        if (!set) next.set(name, { type: w[2], family: (w[fi + 1] ?? 'inet') as 'inet' | 'inet6', entries: new Set() });
      } else if (op === 'flush') need().entries.clear();
      else if (op === 'add') {
        const s = need();
        if (s.entries.has(w[2]) && !exist) throw new RestoreError(`ipset: element already added`);
        s.entries.add(w[2]);
      } else if (op === 'del') {
        const s = need();
        if (!s.entries.delete(w[2]) && !exist) throw new RestoreError(`ipset: element not added`);
      } else if (op === 'swap') {
        const other = next.get(w[2]);
        if (!other) throw new RestoreError(`ipset: set ${w[2]} does not exist`);
        const a = need();
        next.set(name, other);
        next.set(w[2], a);
      } else if (op === 'destroy') {
        need();
        next.delete(name);
      } else throw new RestoreError(`ipset: unsupported command ${op}`);
    }
    this.sets.clear();
    for (const [k, v] of next) this.sets.set(k, v);
    return ok('');
  }

  /** iptables-save-like text of one family (all tables, or one). */
  dump(family: Family, only?: string): string {
    const out: string[] = [];
    const tables = this.families.get(family)!;
    for (const name of [...tables.keys()].sort()) {
      if (only && name !== only) continue;
      const t = tables.get(name)!;
      const builtins = builtinChains[name];
      const users = [...t.keys()].filter((c) => !builtins.includes(c)).sort();
      out.push(`*${name}`);
      for (const c of builtins) out.push(`:${c} ACCEPT [0:0]`);
      for (const c of users) out.push(`:${c} - [0:0]`);
      for (const c of [...builtins, ...users]) for (const r of t.get(c)!) out.push(`-A ${c} ${r}`);
      out.push('COMMIT');
    }
    return `${out.join('\n')}\n`;
  }

  trace(p: TracePacket): TraceOutcome[] {
    const family: Family = p.dst.includes(':') ? 6 : 4;
    return trace(this.families.get(family)!, this.sets, this.localAddresses, p);
  }
}

function ok(stdout: string): ExecResult {
  return { stdout, stderr: '' };
}

function argValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}
