// Finding what someone else changed in kproxy's iptables chains, three ways:
//  - nf_tables events (iptables-nft): a foreign transaction's rule and chain
//    changes name the chains to rewrite, and deleted rules in built-in
//    chains name the chains whose jumps to check (modes/nft-monitor.ts);
//  - iptables-legacy: one save per table, every owned chain's rules
//    digested and compared with the record (legacy reads a whole table per
//    call anyway: 0.4 s for the nat table of 10,000 Services);
//  - iptables-nft, periodically: the canary chain of each table (one rule,
//    so a flush of the table's rules shows) and the jumps from built-in
//    chains, each listed alone (`-S CHAIN`, milliseconds; a whole nat save
//    takes tens of seconds there).
import { hash } from 'node:crypto';
import type { Damage } from '../backend.ts';
import type { NftGeneration } from '../nft-monitor.ts';
import type { Finding } from '../repairs.ts';
import type { Family } from '../../proxy/model.ts';
import {
  builtinJumps, canaryRule, dispatchChains, fixedChains, fixedContents, servicesTail,
  type BuiltinJump, type FamilyOptions, type Table,
} from './layout.ts';
import { chains } from './names.ts';
import { isOwnedChain } from './owned.ts';
import type { FamilyRecord } from './plan.ts';
import { probability } from './rule.ts';

/** A chain of kproxy's to rewrite, or a built-in chain whose jumps into kproxy's chains to check. */
export interface IptDamage extends Damage {
  readonly family: Family;
  readonly kind: 'chain' | 'jump';
  readonly table: Table;
  readonly chain: string;
}

const ipName = (f: Family): string => (f === 4 ? 'ip' : 'ip6');

export function chainFinding(family: Family, table: Table, chain: string): Finding<IptDamage> {
  return {
    key: `chain ${family} ${table} ${chain}`,
    damage: { what: chain === chains.canary ? 'canary' : 'chain', object: `${ipName(family)} ${table} ${chain}`, family, kind: 'chain', table, chain },
  };
}

export function jumpFinding(family: Family, table: Table, chain: string): Finding<IptDamage> {
  return {
    key: `jump ${family} ${table} ${chain}`,
    damage: { what: 'jump', object: `${ipName(family)} ${table} ${chain}: jumps into kproxy's chains`, family, kind: 'jump', table, chain },
  };
}

const tables: readonly Table[] = ['nat', 'filter', 'mangle'];
const builtins = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);
const builtinsWithJumps = new Set(builtinJumps().map((j) => `${j.table} ${j.from}`));

function isTable(t: string): t is Table {
  return (tables as readonly string[]).includes(t);
}

/** What a foreign nf_tables transaction changed of kproxy's iptables-nft chains. */
export function damageFromEvents(gen: NftGeneration, families: readonly Family[]): { findings: Finding<IptDamage>[]; full?: string } {
  const findings: Finding<IptDamage>[] = [];
  let full: string | undefined;
  for (const e of gen.events) {
    const family: Family | undefined = e.family === 'ip' ? 4 : e.family === 'ip6' ? 6 : undefined;
    if (family === undefined || !families.includes(family) || !isTable(e.table)) continue;
    if (e.object === 'table') {
      if (e.verb === 'delete' || e.verb === 'destroy' || e.verb === 'flush') full ??= `${e.verb} table ${e.family} ${e.table} by ${gen.comm} (pid ${gen.pid})`;
    } else if (e.object === 'chain') {
      if ((e.verb === 'delete' || e.verb === 'destroy') && isOwnedChain(e.table, e.name)) findings.push(chainFinding(family, e.table, e.name));
    } else if (e.object === 'rule') {
      if (isOwnedChain(e.table, e.name)) findings.push(chainFinding(family, e.table, e.name));
      else if (builtins.has(e.name) && builtinsWithJumps.has(`${e.table} ${e.name}`) && e.verb !== 'add' && e.verb !== 'insert') {
        findings.push(jumpFinding(family, e.table, e.name));
      }
    }
  }
  return full === undefined ? { findings } : { findings, full };
}

const digest = (text: string): string => hash('sha1', text, 'base64');

/** Per owned chain ("table chain"), the digest of its rule lines as the record says the kernel holds them. */
export function expectedDigests(rec: FamilyRecord, o: FamilyOptions): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of fixedChains) out.set(`${c.table} ${c.name}`, digest(''));
  for (const c of fixedContents(o)) out.set(`${c.table} ${c.name}`, digest(c.text));
  for (const s of rec.services.values()) for (const c of s.chains) out.set(`${c.table} ${c.name}`, c.digest);
  for (const dc of dispatchChains) {
    const name = dc.slice(dc.indexOf(' ') + 1);
    const lines: string[] = [];
    for (const key of rec.order.get(dc) ?? []) for (const r of rec.services.get(key)?.dispatch.get(dc) ?? []) lines.push(`-A ${name} ${r}`);
    if (dc === 'nat KUBE-SERVICES') for (const r of servicesTail(o)) lines.push(`-A ${name} ${r}`);
    out.set(dc, digest(lines.join('\n')));
  }
  return out;
}

// iptables stores a probability as a 31-bit fraction and prints it with 11
// decimals; kproxy writes 1/n with 10. Map the printed value back to what
// kproxy wrote, so chain text compares exactly.
const probabilities = new Map<string, string>();
function asWritten(printed: string): string {
  let p = probabilities.get(printed);
  if (p === undefined) {
    const k = Math.round(Number(printed) * 2 ** 31);
    const n = Math.round(2 ** 31 / k);
    const candidate = probability(1 / n);
    p = Number.isFinite(n) && n > 0 && Math.round(Number(candidate) * 2 ** 31) === k ? candidate : printed;
    probabilities.set(printed, p);
  }
  return p;
}

export interface SavedTable {
  /** Owned chains declared, with the digest of their rule lines. */
  readonly chains: Map<string, string>;
  /** Rule lines ("-A CHAIN spec") of the built-in chains. */
  readonly builtinLines: Set<string>;
}

/**
 * Digests the owned chains of one `iptables-save -t TABLE` dump. Lines of
 * a chain come together there, so each chain is hashed as one piece; the
 * text is scanned once, without splitting it into an array of 100,000
 * lines.
 */
export function digestSave(text: string, table: Table): SavedTable {
  const chainsOut = new Map<string, string>();
  const builtinLines = new Set<string>();
  const ownedCache = new Map<string, boolean>();
  const owned = (c: string): boolean => {
    let v = ownedCache.get(c);
    if (v === undefined) ownedCache.set(c, (v = isOwnedChain(table, c)));
    return v;
  };
  let current: string | undefined;
  let lines: string[] = [];
  const flush = (): void => {
    if (current !== undefined) chainsOut.set(current, digest(lines.join('\n')));
    current = undefined;
    lines = [];
  };
  let inTable = false;
  let at = 0;
  while (at < text.length) {
    let end = text.indexOf('\n', at);
    if (end < 0) end = text.length;
    const line = text.slice(at, end);
    at = end + 1;
    if (line.startsWith('*')) {
      inTable = line.slice(1).trim() === table;
      continue;
    }
    if (!inTable) continue;
    if (line.startsWith(':')) {
      const name = line.slice(1, line.indexOf(' ') > 0 ? line.indexOf(' ') : undefined);
      if (owned(name) && !chainsOut.has(name)) chainsOut.set(name, digest(''));
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const sp = line.indexOf(' ', 3);
    const chain = line.slice(3, sp < 0 ? undefined : sp);
    if (builtins.has(chain)) {
      builtinLines.add(line);
      continue;
    }
    if (!owned(chain)) continue;
    if (chain !== current) {
      flush();
      current = chain;
    }
    lines.push(line.includes('--probability ') ? line.replace(/--probability (\S+)/, (_, p: string) => `--probability ${asWritten(p)}`) : line);
  }
  flush();
  return { chains: chainsOut, builtinLines };
}

/** Jumps of `table` the saved built-in chains lack. */
export function missingJumpsIn(table: Table, saved: SavedTable): BuiltinJump[] {
  return builtinJumps().filter((j) => j.table === table && !saved.builtinLines.has(`-A ${j.from} ${j.rule}`));
}

/**
 * Compares saved tables with the record: every owned chain the record
 * holds must be declared with the same rules, and the jumps from built-in
 * chains present. `skip` names chains whose kernel text is known not to
 * match kproxy's rendering (checked by count only... not at all).
 */
export function compareSaved(
  family: Family, saved: ReadonlyMap<Table, SavedTable>, want: ReadonlyMap<string, string>, skip: ReadonlySet<string>,
): Finding<IptDamage>[] {
  const out: Finding<IptDamage>[] = [];
  for (const [key, d] of want) {
    if (skip.has(key)) continue;
    const i = key.indexOf(' ');
    const table = key.slice(0, i) as Table;
    const chain = key.slice(i + 1);
    const t = saved.get(table);
    if (!t) continue;
    if (t.chains.get(chain) !== d) out.push(chainFinding(family, table, chain));
  }
  for (const table of ['nat', 'filter'] as const) {
    const t = saved.get(table);
    if (!t) continue;
    for (const from of new Set(missingJumpsIn(table, t).map((j) => j.from))) out.push(jumpFinding(family, table, from));
  }
  return out;
}

/** The lines `iptables -t T -S KUBE-PROXY-CANARY` prints for an intact canary. */
export function intactCanary(listing: string): boolean {
  return listing.split('\n').some((l) => l === `-A ${chains.canary} ${canaryRule}`);
}

/** Jumps from `from` (in `table`) that a `-S FROM` listing lacks. */
export function missingJumpsInListing(table: Table, from: string, listing: string): BuiltinJump[] {
  const have = new Set(listing.split('\n'));
  return builtinJumps().filter((j) => j.table === table && j.from === from && !have.has(`-A ${from} ${j.rule}`));
}

/** The built-in chains kproxy jumps from, per table. */
export function builtinChainsWithJumps(): { table: Table; chain: string }[] {
  return [...builtinsWithJumps].map((k) => {
    const [table, chain] = k.split(' ');
    return { table: table as Table, chain };
  });
}
