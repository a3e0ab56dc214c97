// Turns a NodeState (plus what kproxy last applied) into the restore batch
// of one IP family. A full plan rewrites every owned chain and deletes stale
// ones; a partial plan touches only the chains and dispatch rules of the
// Services that changed, so the batch grows with the change, not the table.
// The record of what was applied lives here and is updated only after the
// kernel accepted the batch (commit()).
import { hash } from 'node:crypto';
import type { Family, NodeState, ServicePortState } from '../../proxy/model.ts';
import type { RefusedPort } from '../values.ts';
import { RuleSyntaxError } from './rule.ts';
import { RestoreBatch } from './batch.ts';
import {
  dispatchChains, fixedChains, fixedContents, serviceOutput, servicesTail,
  type BuiltinJump, type DispatchChain, type FamilyOptions, type ServiceOutput, type Table,
} from './layout.ts';

/**
 * What the record keeps of one Service: a digest of each chain instead of
 * its text (the text of 10,000 Services is tens of MB; only "did it change"
 * is needed later), and the exact dispatch lines (needed for `-D`).
 */
export interface Recorded {
  readonly key: string;
  readonly chains: readonly { readonly table: Table; readonly name: string; readonly digest: string; readonly count: number }[];
  readonly dispatch: ReadonlyMap<DispatchChain, readonly string[]>;
  readonly loopback: readonly string[];
}

function digest(text: string): string {
  return hash('sha1', text, 'base64'); // one-shot: no Hash object per chain
}

function recorded(s: ServiceOutput): Recorded {
  return {
    key: s.key,
    chains: s.chains.map((c) => ({ table: c.table, name: c.name, digest: digest(c.text), count: c.count })),
    dispatch: s.dispatch,
    loopback: s.loopback,
  };
}

/** What kproxy believes the kernel holds for one family. */
export class FamilyRecord {
  services = new Map<string, Recorded>();
  /** Per shared chain: sorted keys of the Services with rules in it. */
  order = new Map<DispatchChain, string[]>();
  /** Service-owned chains present, as "table chain". */
  chains = new Set<string>();
  /** Loopback ipset entries with the number of Service ports using each. */
  loopRefs = new Map<string, number>();
  ruleCounts: Record<string, number> = {};
}

export interface FamilyPlan {
  readonly family: Family;
  readonly batch: RestoreBatch;
  /** ipset restore lines for this family (may be empty). */
  readonly ipset: readonly string[];
  /** The line creating the live set, which the restore batch refers to. */
  readonly ipsetCreate: readonly string[];
  /** Service ports left out because a value could not be written safely. */
  readonly refused: readonly RefusedPort[];
  /** Applies the plan to the record and returns it; call only after the kernel accepted it. */
  commit(): FamilyRecord;
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function lowerBound(arr: readonly string[], key: string): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function splitKey(k: string): [Table, string] {
  const i = k.indexOf(' ');
  return [k.slice(0, i) as Table, k.slice(i + 1)];
}

/** "table chain" → the key of the Service owning it, for the chains of the record. */
export function chainOwners(rec: FamilyRecord): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, r] of rec.services) for (const c of r.chains) out.set(`${c.table} ${c.name}`, key);
  return out;
}

type Countable = Pick<Recorded, 'dispatch'> & { readonly chains: readonly { readonly table: Table; readonly count: number }[] };

function countRules(outputs: Iterable<Countable>, o: FamilyOptions): Record<string, number> {
  const counts: Record<string, number> = { nat: servicesTail(o).length, filter: 0, mangle: 0 };
  for (const c of fixedContents(o)) counts[c.table] += c.count;
  for (const s of outputs) addCounts(counts, s, 1);
  return counts;
}

function addCounts(counts: Record<string, number>, s: Countable, sign: number): void {
  for (const c of s.chains) counts[c.table] += sign * c.count;
  for (const [dc, lines] of s.dispatch) counts[splitKey(dc)[0]] += sign * lines.length;
}

export function familyServices(state: NodeState, family: Family): ServiceOutputInput[] {
  const out: ServiceOutputInput[] = [];
  for (const s of state.services.values()) if (s.family === family) out.push(s);
  return out.sort((a, b) => cmp(a.key, b.key));
}
type ServiceOutputInput = Parameters<typeof serviceOutput>[0];

/** The port's output, or undefined (and the reason added to `refused`) when it cannot be written safely. */
function outputOrRefused(s: ServicePortState, o: FamilyOptions, refused: RefusedPort[]): ServiceOutput | undefined {
  try {
    return serviceOutput(s, o);
  } catch (e) {
    if (!(e instanceof RuleSyntaxError)) throw e;
    refused.push({ key: s.key, reason: e.message });
    return undefined;
  }
}

export interface IpsetNames {
  readonly set: string;
  readonly family: 'inet' | 'inet6';
}

/** The set a full sync fills before swapping it with the live one. */
export function scratchSet(live: string): string {
  return `${live}-T`.slice(0, 31);
}

function ipsetCreate(name: string, fam: string): string {
  return `create ${name} hash:ip,port,ip family ${fam} hashsize 1024 maxelem 1048576`;
}

/**
 * Full plan: every owned chain rewritten in one batch (a `:CHAIN` line
 * flushes and refills atomically, so traffic never sees an empty table),
 * stale chains (from the record or found in the kernel at start-up) deleted.
 */
export function planFull(
  state: NodeState, o: FamilyOptions, rec: FamilyRecord, existing: ReadonlySet<string>, set: IpsetNames,
  missingJumps: readonly BuiltinJump[] = [],
): FamilyPlan {
  const b = new RestoreBatch();
  for (const f of fixedChains) b.declareChain(f.table, f.name);
  for (const c of fixedContents(o)) b.appendBlock(c.table, c.text, c.count);
  // Each Service's chain text goes straight into the batch; the record keeps digests.
  const outputs: Recorded[] = [];
  const wanted = new Set<string>();
  const refused: RefusedPort[] = [];
  for (const svc of familyServices(state, o.family)) {
    const s = outputOrRefused(svc, o, refused);
    if (!s) continue;
    for (const c of s.chains) {
      wanted.add(`${c.table} ${c.name}`);
      b.declareChain(c.table, c.name);
      b.appendBlock(c.table, c.text, c.count);
    }
    outputs.push(recorded(s));
  }
  const stale = new Set<string>();
  for (const k of [...rec.chains, ...existing]) if (!wanted.has(k)) stale.add(k);
  for (const k of [...stale].sort()) {
    const [t, n] = splitKey(k);
    b.declareChain(t, n);
    b.deleteChain(t, n);
  }

  const order = new Map<DispatchChain, string[]>();
  for (const dc of dispatchChains) {
    const [t, n] = splitKey(dc);
    const keys: string[] = [];
    for (const s of outputs) {
      const lines = s.dispatch.get(dc);
      if (!lines) continue;
      keys.push(s.key);
      for (const r of lines) b.append(t, n, r);
    }
    order.set(dc, keys);
  }
  for (const r of servicesTail(o)) b.append('nat', 'KUBE-SERVICES', r);
  // Jumps from built-in chains are only ever inserted when missing, never
  // by flushing a built-in chain (other software owns rules there too).
  for (const j of missingJumps) b.insert(j.table, j.from, 1, j.rule);

  const refs = new Map<string, number>();
  for (const s of outputs) for (const e of s.loopback) refs.set(e, (refs.get(e) ?? 0) + 1);
  // Fill a scratch set and swap it in: the live set is never half-filled.
  const tmp = scratchSet(set.set);
  const ipset = [
    `${ipsetCreate(set.set, set.family)}`,
    `${ipsetCreate(tmp, set.family)}`,
    `flush ${tmp}`,
    ...[...refs.keys()].map((e) => `add ${tmp} ${e}`),
    `swap ${tmp} ${set.set}`,
    `destroy ${tmp}`,
  ];

  return {
    family: o.family, batch: b, ipset, ipsetCreate: [ipsetCreate(set.set, set.family)], refused,
    commit() {
      rec.services = new Map(outputs.map((s) => [s.key, s]));
      rec.order = order;
      rec.chains = wanted;
      rec.loopRefs = refs;
      rec.ruleCounts = countRules(outputs, o);
      return rec;
    },
  };
}

/**
 * What someone else changed that a partial plan restores: owned chains (as
 * "table chain") to rewrite whole, and jumps from built-in chains to put
 * back (found missing by prepare()).
 */
export interface FamilyRepair {
  readonly chains: ReadonlySet<string>;
  readonly jumps: readonly BuiltinJump[];
}

const noRepair: FamilyRepair = { chains: new Set(), jumps: [] };

/** Partial plan for the changed keys of this family, plus the repairs asked for. */
export function planPartial(
  state: NodeState, keys: ReadonlySet<string>, o: FamilyOptions, rec: FamilyRecord, set: IpsetNames,
  repair: FamilyRepair = noRepair,
): FamilyPlan {
  const b = new RestoreBatch();
  const prefix = `${o.family}/`;
  const changed: { key: string; old?: Recorded; neu?: ServiceOutput; neuRec?: Recorded }[] = [];
  const refused: RefusedPort[] = [];
  for (const key of [...keys].filter((k) => k.startsWith(prefix)).sort()) {
    const s = state.services.get(key);
    // A port that cannot be rendered safely goes as if it were removed.
    const neu = s ? outputOrRefused(s, o, refused) : undefined;
    const old = rec.services.get(key);
    // Digested once: compared here, kept by commit().
    if (old || neu) changed.push({ key, old, neu, neuRec: neu && recorded(neu) });
  }

  const chainsAdded: string[] = [];
  const chainsRemoved: string[] = [];
  const loopDelta = new Map<string, number>();
  for (const { old, neu, neuRec } of changed) {
    const oldChains = new Map((old?.chains ?? []).map((c) => [`${c.table} ${c.name}`, c.digest]));
    const newKeys = new Set<string>();
    for (const [i, c] of (neu?.chains ?? []).entries()) {
      const k = `${c.table} ${c.name}`;
      newKeys.add(k);
      if (oldChains.get(k) === neuRec!.chains[i].digest && !repair.chains.has(k)) continue; // unchanged: leave it alone
      b.declareChain(c.table, c.name);
      b.appendBlock(c.table, c.text, c.count);
      if (!oldChains.has(k)) chainsAdded.push(k);
    }
    for (const k of oldChains.keys()) {
      if (newKeys.has(k)) continue;
      const [t, n] = splitKey(k);
      b.declareChain(t, n);
      b.deleteChain(t, n);
      chainsRemoved.push(k);
    }
    for (const e of old?.loopback ?? []) loopDelta.set(e, (loopDelta.get(e) ?? 0) - 1);
    for (const e of neu?.loopback ?? []) loopDelta.set(e, (loopDelta.get(e) ?? 0) + 1);
  }

  // Repaired chains of Services that did not change: their text again,
  // rendered from the state (equal to what the record's digests stand for).
  if (repair.chains.size) {
    const changedKeys = new Set(changed.map((c) => c.key));
    const owners = chainOwners(rec);
    for (const k of repair.chains) {
      const owner = owners.get(k);
      if (owner === undefined || changedKeys.has(owner)) continue;
      const s = state.services.get(owner);
      const c = s && serviceOutput(s, o).chains.find((x) => `${x.table} ${x.name}` === k);
      if (!c) continue;
      b.declareChain(c.table, c.name);
      b.appendBlock(c.table, c.text, c.count);
    }
    for (const c of fixedContents(o)) {
      if (!repair.chains.has(`${c.table} ${c.name}`)) continue;
      b.declareChain(c.table, c.name);
      b.appendBlock(c.table, c.text, c.count);
    }
  }
  for (const j of repair.jumps) b.insert(j.table, j.from, 1, j.rule);

  // Shared chains: delete the changed Services' old rules by spec, insert
  // the new ones at the position the sorted order gives them, so the chain
  // ends up exactly as a full sync would write it. A shared chain to repair
  // is written whole instead.
  const newOrders = new Map<DispatchChain, string[]>();
  for (const dc of dispatchChains) {
    const [t, n] = splitKey(dc);
    const rewrite = repair.chains.has(dc);
    const touched = changed.filter(({ old, neu }) =>
      (old?.dispatch.get(dc) ?? []).join('\n') !== (neu?.dispatch.get(dc) ?? []).join('\n'));
    if (touched.length === 0 && !rewrite) continue;
    const order = [...(rec.order.get(dc) ?? [])];
    const newLines = new Map<string, readonly string[]>();
    for (const { key, old, neu } of touched) {
      if (!rewrite) for (const r of old?.dispatch.get(dc) ?? []) b.delete(t, n, r);
      const lines = neu?.dispatch.get(dc) ?? [];
      newLines.set(key, lines);
      const at = lowerBound(order, key);
      const present = order[at] === key;
      if (lines.length && !present) order.splice(at, 0, key);
      else if (!lines.length && present) order.splice(at, 1);
    }
    newOrders.set(dc, order);
    if (rewrite) {
      b.declareChain(t, n);
      for (const key of order) {
        for (const r of newLines.get(key) ?? rec.services.get(key)?.dispatch.get(dc) ?? []) b.append(t, n, r);
      }
      if (dc === 'nat KUBE-SERVICES') for (const r of servicesTail(o)) b.append(t, n, r);
      continue;
    }
    let pos = 1;
    for (const key of order) {
      const lines = newLines.get(key);
      if (lines) {
        for (const r of lines) b.insert(t, n, pos++, r);
      } else {
        pos += rec.services.get(key)?.dispatch.get(dc)?.length ?? 0;
      }
    }
  }

  const ipset: string[] = [];
  const newRefs: [string, number][] = [];
  for (const [e, d] of loopDelta) {
    if (d === 0) continue;
    const before = rec.loopRefs.get(e) ?? 0;
    const after = before + d;
    newRefs.push([e, after]);
    if (before === 0 && after > 0) ipset.push(`add ${set.set} ${e}`);
    else if (before > 0 && after <= 0) ipset.push(`del ${set.set} ${e}`);
  }

  return {
    family: o.family, batch: b, ipset, ipsetCreate: [], refused,
    commit() {
      for (const { key, old, neuRec } of changed) {
        if (old) addCounts(rec.ruleCounts, old, -1);
        if (neuRec) {
          addCounts(rec.ruleCounts, neuRec, 1);
          rec.services.set(key, neuRec);
        } else rec.services.delete(key);
      }
      for (const [dc, order] of newOrders) rec.order.set(dc, order);
      for (const k of chainsRemoved) rec.chains.delete(k);
      for (const k of chainsAdded) rec.chains.add(k);
      for (const [e, n] of newRefs) {
        if (n > 0) rec.loopRefs.set(e, n);
        else rec.loopRefs.delete(e);
      }
      return rec;
    },
  };
}
