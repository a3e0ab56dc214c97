// Damage found (by a periodic check or an event watch) and not yet
// repaired. A backend queues what it finds here; its next plan takes a
// snapshot and repairs it; once the dataplane accepted that plan, the
// snapshot's items are settled and the plan's `repairs` are counted. Items
// found meanwhile stay for the plan after.
import type { Damage } from './backend.ts';

/** A damaged object, with the key that makes two findings of it one. */
export interface Finding<D extends Damage = Damage> {
  readonly key: string;
  readonly damage: D;
}

export interface RepairSnapshot<D extends Damage> {
  readonly items: readonly D[];
  /** Why the plan must be full (too broad, or unknown). */
  readonly full?: string;
}

export class PendingRepairs<D extends Damage> {
  private readonly items = new Map<string, D>();
  private fullWhy: string | undefined;
  /** More than this many targeted items make the damage "too broad": a full sync instead. */
  readonly maxItems: number;

  constructor(maxItems = 200) {
    this.maxItems = maxItems;
  }

  get empty(): boolean {
    return this.items.size === 0 && this.fullWhy === undefined;
  }

  /** Why a full sync is owed, if it is. */
  get full(): string | undefined {
    return this.fullWhy;
  }

  /**
   * Queues findings; a later finding of the same object replaces the
   * earlier one (it knows the object's latest state). Returns the findings
   * that were new or replaced one.
   */
  add(findings: Iterable<Finding<D>>): D[] {
    const added = new Map<string, D>();
    for (const f of findings) {
      const prev = this.items.get(f.key);
      if (prev !== undefined && JSON.stringify(prev) === JSON.stringify(f.damage)) continue;
      this.items.set(f.key, f.damage);
      added.set(f.key, f.damage);
    }
    if (this.items.size > this.maxItems && this.fullWhy === undefined) {
      this.fullWhy = `${this.items.size} objects changed`;
    }
    return [...added.values()];
  }

  has(key: string): boolean {
    return this.items.has(key);
  }

  requireFull(why: string): void {
    this.fullWhy ??= why;
  }

  /** What a plan made now repairs. */
  snapshot(): RepairSnapshot<D> {
    return { items: [...this.items.values()], ...(this.fullWhy !== undefined ? { full: this.fullWhy } : {}) };
  }

  /** What a plan made from `snap` repairs (Plan.repairs): one full sync, or each item. */
  static repairsOf<D extends Damage>(snap: RepairSnapshot<D>, planFull: boolean): Damage[] {
    if (snap.full !== undefined && planFull) return [{ what: 'full', object: snap.full }];
    return [...snap.items];
  }

  /**
   * The dataplane accepted a plan made from `snap`: its items are repaired
   * (a full plan repairs whatever was found before it was made); findings
   * queued since stay.
   */
  settle(snap: RepairSnapshot<D>, planFull: boolean): void {
    const done = new Set(snap.items);
    for (const [k, d] of this.items) if (done.has(d)) this.items.delete(k);
    if (planFull && this.fullWhy === snap.full) this.fullWhy = undefined;
  }

  /** The record was dropped (a failed apply, cleanup): the next full plan repairs everything; keep the findings to report them. */
  clear(): void {
    this.items.clear();
    this.fullWhy = undefined;
  }
}
