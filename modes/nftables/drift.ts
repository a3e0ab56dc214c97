// What someone else changed in kproxy's nftables table, from nf_tables
// events (modes/nft-monitor.ts), and the commands that put it back from
// kproxy's record. A flushed or edited chain is rewritten; a deleted,
// added or replaced map or set element is put back or removed; a change to
// the table's structure (a table, chain, set or map added or deleted) is
// too broad to patch: the table is rebuilt by a full sync.
import type { Damage } from '../backend.ts';
import type { NftEvent, NftGeneration } from '../nft-monitor.ts';
import type { Finding } from '../repairs.ts';
import type { Family } from '../../proxy/model.ts';
import type { Command } from './objects.ts';
import { parseElement, splitTopLevel } from './objects.ts';
import { staticSets, tableName, type FamilySyntax } from './layout.ts';
import type { TableRecord } from './table-record.ts';

export interface NftDamage extends Damage {
  readonly family: Family;
  readonly kind: 'chain' | 'element';
  /** The chain, or the set or map of an element. */
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

/** The keys of an element event's `{ k1 : v1, k2 : v2 }` (dynamic sets add `expires ...` after the key). */
function elementKeys(e: NftEvent): string[] {
  const open = e.rest.indexOf('{');
  const close = e.rest.lastIndexOf('}');
  if (open < 0 || close < open) return [];
  return splitTopLevel(e.rest.slice(open + 1, close)).map((x) => parseElement(x).key);
}

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
        for (const key of elementKeys(e)) findings.push(elementFinding(f, e.name, key, now));
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
  for (const d of damage) {
    if (d.family !== record.f.family) continue;
    if (d.kind === 'chain') {
      rules ??= record.chainRules();
      const r = rules.get(d.name);
      if (!r) continue; // not kproxy's: a structural change, rebuilt in full
      out.push({ verb: 'flush', object: 'chain', ...w, name: d.name });
      for (const rule of r) out.push({ verb: 'add', object: 'rule', ...w, chain: d.name, rule });
    } else if (d.key !== undefined) {
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
