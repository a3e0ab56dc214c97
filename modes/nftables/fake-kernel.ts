// A stand-in for the kernel's nf_tables for fast tests: parses an `nft -f -`
// batch back, applies it all-or-nothing with the checks nft would make
// (missing chains/sets, busy objects, duplicate or missing elements), and
// prints tables the way `nft list table` does.
import { KproxyError } from '../../lib/errors.ts';
import type { Exec } from '../../lib/exec.ts';
import { ToolError } from '../../lib/exec.ts';
import { formatTimeout, parseCommand, type BaseChainSpec, type Command, type SetSpec } from './objects.ts';

export interface FakeChain {
  readonly base?: BaseChainSpec;
  rules: string[];
}

export interface FakeSet {
  readonly kind: 'set' | 'map';
  readonly spec: SetSpec;
  /** key → value (undefined for sets), in insertion order. */
  elements: Map<string, string | undefined>;
}

export interface FakeTable {
  readonly chains: Map<string, FakeChain>;
  readonly sets: Map<string, FakeSet>;
}

export class NftError extends KproxyError {
  constructor(message: string) {
    super('KPROXY_NFT_REJECTED', message);
    this.name = 'NftError';
  }
}

function cloneTables(tables: Map<string, FakeTable>): Map<string, FakeTable> {
  const out = new Map<string, FakeTable>();
  for (const [k, t] of tables) {
    out.set(k, {
      chains: new Map([...t.chains].map(([n, c]) => [n, { ...c, rules: [...c.rules] }])),
      sets: new Map([...t.sets].map(([n, s]) => [n, { ...s, elements: new Map(s.elements) }])),
    });
  }
  return out;
}

/** Chains a rule or verdict jumps to, and sets it reads. */
export function references(text: string): { chains: string[]; sets: string[] } {
  const chains = [...text.matchAll(/\b(?:jump|goto) ([A-Za-z][A-Za-z0-9/_.-]*)/g)].map((m) => m[1]);
  const sets = [...text.matchAll(/@([A-Za-z][A-Za-z0-9/_.-]*)/g)].map((m) => m[1]);
  return { chains, sets };
}

function arity(text: string): number {
  return text.split(' . ').length;
}

export class FakeNftKernel {
  private tables = new Map<string, FakeTable>();
  /** Every batch applied successfully, in order (tests look at sizes). */
  readonly applied: string[] = [];

  table(family: string, name: string): FakeTable | undefined {
    return this.tables.get(`${family} ${name}`);
  }

  tableNames(): string[] {
    return [...this.tables.keys()];
  }

  /** Applies a batch atomically; throws NftError naming the failing line. */
  apply(batch: string): void {
    const work = cloneTables(this.tables);
    const lines = batch.split('\n');
    lines.forEach((line, i) => {
      if (line.trim() === '' || line.trim().startsWith('#')) return;
      try {
        this.applyOne(work, parseCommand(line));
      } catch (e) {
        throw new NftError(`line ${i + 1}: ${(e as Error).message}\n${line}`);
      }
    });
    this.tables = work;
    this.applied.push(batch);
  }

  private applyOne(tables: Map<string, FakeTable>, cmd: Command): void {
    const id = `${cmd.family} ${cmd.table}`;
    if (cmd.object === 'table') {
      if (cmd.verb === 'add') {
        if (!tables.has(id)) tables.set(id, { chains: new Map(), sets: new Map() });
      } else if (!tables.has(id)) {
        throw new NftError(`No such file or directory: table ${id}`);
      } else if (cmd.verb === 'delete') {
        tables.delete(id);
      } else {
        for (const c of tables.get(id)!.chains.values()) c.rules = [];
      }
      return;
    }
    const t = tables.get(id);
    if (!t) throw new NftError(`No such file or directory: table ${id}`);
    switch (cmd.object) {
      case 'chain': {
        const c = t.chains.get(cmd.name);
        if (cmd.verb === 'add') {
          if (c && JSON.stringify(c.base) !== JSON.stringify(cmd.base)) throw new NftError(`File exists: chain ${cmd.name} with another type`);
          if (!c) t.chains.set(cmd.name, { ...(cmd.base ? { base: cmd.base } : {}), rules: [] });
          return;
        }
        if (!c) throw new NftError(`No such file or directory: chain ${cmd.name}`);
        if (cmd.verb === 'flush') {
          c.rules = [];
          return;
        }
        if (c.rules.length) throw new NftError(`Device or resource busy: chain ${cmd.name} has rules`);
        const users = this.chainUsers(t, cmd.name);
        if (users.length) throw new NftError(`Device or resource busy: chain ${cmd.name} is in use by ${users[0]}`);
        t.chains.delete(cmd.name);
        return;
      }
      case 'rule': {
        const c = t.chains.get(cmd.chain);
        if (!c) throw new NftError(`No such file or directory: chain ${cmd.chain}`);
        this.checkReferences(t, cmd.rule);
        c.rules.push(cmd.rule);
        return;
      }
      case 'set':
      case 'map': {
        const s = t.sets.get(cmd.name);
        if (cmd.verb === 'add') {
          if (s && (s.kind !== cmd.object || JSON.stringify(s.spec) !== JSON.stringify(cmd.spec))) throw new NftError(`File exists: ${cmd.object} ${cmd.name} with another type`);
          if (!s) t.sets.set(cmd.name, { kind: cmd.object, spec: cmd.spec!, elements: new Map() });
          return;
        }
        if (!s || s.kind !== cmd.object) throw new NftError(`No such file or directory: ${cmd.object} ${cmd.name}`);
        if (cmd.verb === 'flush') {
          s.elements = new Map();
          return;
        }
        for (const [chain, c] of t.chains) {
          if (c.rules.some((r) => references(r).sets.includes(cmd.name))) throw new NftError(`Device or resource busy: ${cmd.name} is used by chain ${chain}`);
        }
        t.sets.delete(cmd.name);
        return;
      }
      case 'element': {
        const s = t.sets.get(cmd.set);
        if (!s) throw new NftError(`No such file or directory: set ${cmd.set}`);
        for (const e of cmd.elements) {
          if (arity(e.key) !== arity(s.spec.key)) throw new NftError(`element ${e.key} does not match the key ${s.spec.key} of ${cmd.set}`);
          if (cmd.verb === 'delete') {
            if (!s.elements.has(e.key)) throw new NftError(`No such file or directory: element ${e.key} in ${cmd.set}`);
            s.elements.delete(e.key);
            continue;
          }
          if ((s.kind === 'map') !== (e.value !== undefined)) throw new NftError(`element ${e.key}: ${s.kind === 'map' ? 'missing' : 'unexpected'} data for ${cmd.set}`);
          if (e.value !== undefined) {
            if (s.spec.data === 'verdict') {
              if (!/^(jump|goto) \S+$|^(accept|drop|return)$/.test(e.value)) throw new NftError(`element ${e.key}: ${e.value} is not a verdict`);
              this.checkReferences(t, e.value);
            } else if (arity(e.value) !== arity(s.spec.data!)) {
              throw new NftError(`element ${e.key}: data ${e.value} does not match ${s.spec.data}`);
            }
          }
          if (s.elements.has(e.key) && s.elements.get(e.key) !== e.value) throw new NftError(`File exists: element ${e.key} in ${cmd.set} with other data`);
          s.elements.set(e.key, e.value);
        }
      }
    }
  }

  private checkReferences(t: FakeTable, text: string): void {
    const refs = references(text);
    for (const c of refs.chains) {
      const target = t.chains.get(c);
      if (!target) throw new NftError(`No such file or directory: chain ${c}`);
      if (target.base) throw new NftError(`Operation not supported: jump to base chain ${c}`);
    }
    for (const s of refs.sets) if (!t.sets.has(s)) throw new NftError(`No such file or directory: set ${s}`);
  }

  private chainUsers(t: FakeTable, name: string): string[] {
    const users: string[] = [];
    for (const [cn, c] of t.chains) if (c.rules.some((r) => references(r).chains.includes(name))) users.push(`chain ${cn}`);
    for (const [sn, s] of t.sets) {
      for (const v of s.elements.values()) if (v !== undefined && references(v).chains.includes(name)) users.push(`map ${sn}`);
    }
    return users;
  }

  /**
   * `nft list table` text. With `sorted`, sets and chains come by name
   * instead of creation order (to compare states reached different ways);
   * elements are always sorted (the kernel's hash order is arbitrary).
   */
  dump(family: string, name: string, opts: { sorted?: boolean } = {}): string {
    const t = this.table(family, name);
    if (!t) throw new NftError(`No such file or directory: table ${family} ${name}`);
    const order = <T>(m: Map<string, T>): [string, T][] => (opts.sorted ? [...m].sort(([a], [b]) => collator.compare(a, b)) : [...m]);
    const blocks: string[] = [];
    for (const [n, s] of order(t.sets)) {
      const lines = [`\t${s.kind} ${n} {`, `\t\t${s.spec.keyword} ${s.spec.key}${s.spec.data ? ` : ${s.spec.data}` : ''}`];
      if (s.spec.size !== undefined) lines.push(`\t\tsize ${s.spec.size}`);
      if (s.spec.flags?.length) lines.push(`\t\tflags ${s.spec.flags.join(',')}`);
      if (s.spec.timeout !== undefined) lines.push(`\t\ttimeout ${formatTimeout(s.spec.timeout)}`);
      const els = [...s.elements].map(([k, v]) => (v === undefined ? k : `${k} : ${v}`)).sort(collator.compare);
      if (els.length) lines.push(`\t\telements = { ${els.join(',\n\t\t\t     ')} }`);
      lines.push('\t}');
      blocks.push(lines.join('\n'));
    }
    for (const [n, c] of order(t.chains)) {
      const lines = [`\tchain ${n} {`];
      if (c.base) lines.push(`\t\ttype ${c.base.type} hook ${c.base.hook} priority ${c.base.priority}; policy accept;`);
      for (const r of c.rules) lines.push(`\t\t${r}`);
      lines.push('\t}');
      blocks.push(lines.join('\n'));
    }
    return `table ${family} ${name} {\n${blocks.join('\n\n')}\n}\n`;
  }

  /** An Exec that answers the nft calls a backend makes (other tools fail). */
  readonly exec: Exec = async (tool, args, input) => {
    const fail = (msg: string): never => {
      throw new ToolError(tool, args, 1, msg);
    };
    if (!tool.endsWith('/nft') && tool !== 'nft') fail(`fake kernel: no tool ${tool}`);
    if (args[0] === '-f' && args[1] === '-') {
      try {
        this.apply(input ?? '');
      } catch (e) {
        fail(`Error: ${(e as Error).message}`);
      }
      return { stdout: '', stderr: '' };
    }
    if (args[0] === 'list' && args[1] === 'table' && args.length === 4) {
      if (!this.table(args[2], args[3])) fail('Error: No such file or directory');
      return { stdout: this.dump(args[2], args[3]), stderr: '' };
    }
    if (args[0] === 'list' && args[1] === 'chains' && args.length === 3) {
      // Chain declarations only, every table of the family (no rules, no sets).
      const out: string[] = [];
      for (const [key, t] of this.tables) {
        const [fam, name] = key.split(' ');
        if (fam !== args[2]) continue;
        out.push(`table ${fam} ${name} {`);
        for (const [n, c] of t.chains) {
          out.push(`\tchain ${n} {`);
          if (c.base) out.push(`\t\ttype ${c.base.type} hook ${c.base.hook} priority ${c.base.priority}; policy accept;`);
          out.push('\t}');
        }
        out.push('}');
      }
      return { stdout: out.length ? out.join('\n') + '\n' : '', stderr: '' };
    }
    return fail(`fake kernel: unsupported nft ${args.join(' ')}`);
  };
}

const collator = new Intl.Collator('en', { numeric: true });
