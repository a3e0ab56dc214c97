// What someone else changed in kproxy's nftables table, from nf_tables
// events (modes/nft-monitor.ts), and the commands that put it back from
// kproxy's record. A flushed or edited chain is rewritten; a deleted,
// added or replaced map or set element is put back or removed when the
// event names its key; a set whose changed elements were not named (the
// listener lists keys of short runs only) or are too many is flushed and
// refilled whole; a change to the table's structure (a table, chain, set
// or map added or deleted) is too broad to patch: the table is rebuilt by
// a full sync.
import type { Damage } from '../backend.ts';
import type { NftEvent, NftGeneration } from '../nft-monitor.ts';
import type { Finding } from '../repairs.ts';
import type { Family } from '../../proxy/model.ts';
import type { Command } from './objects.ts';
import { parseElement, splitTopLevel } from './objects.ts';
import { decodeKey } from './element-keys.ts';
import { staticSets, tableName, type FamilySyntax } from './layout.ts';
import type { TableRecord } from './table-record.ts';

export interface NftDamage extends Damage {
  readonly family: Family;
  readonly kind: 'chain' | 'element' | 'set';
  /** The chain, the set or map of an element, or the set or map refilled whole. */
  readonly name: string;
  /** The element's key. */
  readonly key?: string;
  /** What the kernel holds for the element since the change: nothing, or someone else's value. */
  readonly now?: 'absent' | 'present';
}

function chainFinding(f: FamilySyntax, name: string): Finding<NftDamage> {
  return { key: `chain ${f.family} ${name}`, damage: { what: 'chain', object: `${f.nft} ${tableName} ${name}`, family: f.family, kind: 'chain', name } };
}

function elementFinding(f: FamilySyntax, set: string, key: string, now: 'absent' | 'present'): Finding<NftDamage> {
  return {
    key: `element ${f.family} ${set} ${key}`,
    damage: { what: 'element', object: `${f.nft} ${tableName} ${set} { ${key} }`, family: f.family, kind: 'element', name: set, key, now },
  };
}

function setFinding(f: FamilySyntax, set: string): Finding<NftDamage> {
  return { key: `set ${f.family} ${set}`, damage: { what: 'set', object: `${f.nft} ${tableName} ${set}`, family: f.family, kind: 'set', name: set } };
}

/**
 * More element changes than this in one set of one transaction refill the
 * set instead: a few hundred element findings would make the repair a full
 * rebuild (PendingRepairs.maxItems), refilling one set costs less.
 */
export const maxElementsPerSet = 64;

/** The keys of an element event's `{ k1 : v1, k2 : v2 }` (dynamic sets add `expires ...` after the key). */
function elementKeys(e: NftEvent): string[] {
  const open = e.rest.indexOf('{');
  const close = e.rest.lastIndexOf('}');
  if (open < 0 || close < open) return [];
  return splitTopLevel(e.rest.slice(open + 1, close)).map((x) => parseElement(x).key);
}

/** Elements per `add element` line of a set refilled whole (as a full sync writes them). */
const elementsPerLine = 1000;

/** Sets filled by the datapath (affinity), not by kproxy: their elements are nobody's damage. */
const dynamicSet = /^aff-/;

export interface EventDamage {
  readonly findings: Finding<NftDamage>[];
  /** The table's structure changed: rebuild it (why). */
  readonly rebuild?: string;
}

/** What a foreign transaction changed in kproxy's table(s). */
export function damageFromEvents(gen: NftGeneration, families: readonly FamilySyntax[]): EventDamage {
  const findings: Finding<NftDamage>[] = [];
  let rebuild: string | undefined;
  const by = `by ${gen.comm} (pid ${gen.pid})`;
  // Per family and set: its element findings in order, or null once the whole set is to be refilled.
  const bySet = new Map<string, { f: FamilySyntax; set: string; items: Finding<NftDamage>[] | null }>();
  const elementsOf = (f: FamilySyntax, set: string) => {
    const id = `${f.family} ${set}`;
    let x = bySet.get(id);
    if (!x) bySet.set(id, (x = { f, set, items: [] }));
    return x;
  };
  for (const e of gen.events) {
    const f = families.find((x) => x.nft === e.family);
    if (!f || e.table !== tableName) continue;
    switch (e.object) {
      case 'rule':
        findings.push(chainFinding(f, e.name));
        break;
      case 'element': {
        if (dynamicSet.test(e.name)) break;
        const now = e.verb === 'delete' || e.verb === 'destroy' ? 'absent' : 'present';
        const x = elementsOf(f, e.name);
        if (x.items === null) break;
        let keys: (string | undefined)[];
        if (e.count === undefined) keys = elementKeys(e); // nft monitor's text
        else keys = e.keys ? e.keys.map((k) => decodeKey(f, e.name, k)) : [undefined];
        if (keys.some((k) => k === undefined) || x.items.length + keys.length > maxElementsPerSet) x.items = null;
        else for (const key of keys) x.items.push(elementFinding(f, e.name, key!, now));
        break;
      }
      default: {
        // table, chain, set, map, flowtable, counter...: the table's shape changed.
        const what = `${e.verb} ${e.object} ${e.family} ${e.table}${e.name ? ` ${e.name}` : ''} ${by}`;
        if (e.object === 'table') rebuild = what;
        else rebuild ??= what;
      }
    }
  }
  for (const x of bySet.values()) findings.push(...(x.items ?? [setFinding(x.f, x.set)]));
  return rebuild === undefined ? { findings } : { findings, rebuild };
}

/**
 * Commands that bring the damaged objects of one table back to `record`
 * (the state kproxy last applied). They go first in the sync's
 * transaction; the sync's own changes, computed from the same record,
 * follow.
 */
export function repairCommands(record: TableRecord, damage: readonly NftDamage[]): Command[] {
  const w = { family: record.f.nft, table: tableName } as const;
  const out: Command[] = [];
  let rules: Map<string, readonly string[]> | undefined;
  const refilled = new Set<string>();
  for (const d of damage) {
    if (d.family !== record.f.family || d.kind !== 'set') continue;
    const def = staticSets(record.f).find((s) => s.name === d.name);
    if (!def || refilled.has(d.name)) continue; // not a set kproxy fills: a structural change, rebuilt in full
    refilled.add(d.name);
    out.push({ verb: 'flush', object: def.kind, ...w, name: def.name });
    const list = record.elementsOf(def.name);
    for (let i = 0; i < list.length; i += elementsPerLine) out.push({ verb: 'add', object: 'element', ...w, set: def.name, elements: list.slice(i, i + elementsPerLine) });
  }
  for (const d of damage) {
    if (d.family !== record.f.family || (d.kind === 'element' && refilled.has(d.name))) continue;
    if (d.kind === 'chain') {
      rules ??= record.chainRules();
      const r = rules.get(d.name);
      if (!r) continue; // not kproxy's: a structural change, rebuilt in full
      out.push({ verb: 'flush', object: 'chain', ...w, name: d.name });
      for (const rule of r) out.push({ verb: 'add', object: 'rule', ...w, chain: d.name, rule });
    } else if (d.kind === 'element' && d.key !== undefined) {
      const want = record.elementOf(d.name, d.key);
      if (d.now === 'present') out.push({ verb: 'delete', object: 'element', ...w, set: d.name, elements: [{ key: d.key }] });
      if (want) out.push({ verb: 'add', object: 'element', ...w, set: d.name, elements: [want.value === undefined ? { key: d.key } : { key: d.key, value: want.value }] });
    }
  }
  return out;
}

/**
 * The maps and sets every table holds, declared again (a no-op in the
 * kernel). nft 1.0.6's monitor forgets a named set when a rule using it is
 * deleted, and then cannot report that set's element changes; the event a
 * declaration makes puts it back. Appended to any transaction that deletes
 * rules (a chain flushed or deleted).
 */
export function redeclareSets(f: FamilySyntax): Command[] {
  return staticSets(f).map((s) => ({ verb: 'add', object: s.kind, family: f.nft, table: tableName, name: s.name, spec: s.spec }));
}

/** Whether the commands delete rules (flush or delete a chain). */
export function deletesRules(cmds: readonly Command[]): boolean {
  return cmds.some((c) => c.object === 'chain' && (c.verb === 'flush' || c.verb === 'delete'));
}
