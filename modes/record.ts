// The record-diff-commit cycle every mode follows. A mode's record says what
// its dataplane holds, as far as kproxy knows; a plan diffs the desired
// state against it without changing it, building the next record beside it
// (a fresh record for a full plan, an overlay of changes for a partial one);
// the apply commits that next record only when the dataplane accepted the
// plan, and otherwise forgets the record so that the next plan is full.

/** A planned change of a record: applied to the record by commit(), after the dataplane accepted the plan. */
export interface RecordChange<R> {
  /** Makes the change part of the record; returns the record as it now is. */
  commit(): R;
}

/** The record a mode keeps, known or not. */
export class AppliedRecord<R> {
  #record: R | undefined;

  /** What the dataplane holds; undefined when unknown (start-up, after a failed apply). */
  get current(): R | undefined {
    return this.#record;
  }

  /** A full plan is needed: asked for, or the dataplane's state is unknown. */
  needsFull(full: boolean): boolean {
    return full || this.#record === undefined;
  }

  /**
   * Runs `send`; when it succeeds the change becomes the record, when it
   * throws the record is forgotten (the dataplane may hold part of the
   * plan) and the error goes on.
   */
  async apply(change: RecordChange<R>, send: () => Promise<void>): Promise<void> {
    try {
      await send();
    } catch (err) {
      this.#record = undefined;
      throw err;
    }
    this.#record = change.commit();
  }

  /** The dataplane changed in a way the record cannot say (cleanup, drift): plan in full next time. */
  forget(): void {
    this.#record = undefined;
  }
}

const deleted: unique symbol = Symbol('deleted');

/** The read and write operations a record's maps need; Map and MapOverlay both have them. */
export interface RecordMap<K, V> extends Iterable<[K, V]> {
  get(key: K): V | undefined;
  has(key: K): boolean;
  set(key: K, value: V): this;
  delete(key: K): boolean;
  readonly size: number;
  keys(): IterableIterator<K>;
  values(): IterableIterator<V>;
  entries(): IterableIterator<[K, V]>;
}

/**
 * A map's pending changes, kept beside it: reads see the map with the
 * changes, the map itself is untouched until commit(). Values are stored as
 * given: replace a value, never mutate one the base map holds.
 */
export class MapOverlay<K, V> implements RecordMap<K, V> {
  readonly #base: Map<K, V>;
  readonly #changes = new Map<K, V | typeof deleted>();
  #size: number;

  constructor(base: Map<K, V>) {
    this.#base = base;
    this.#size = base.size;
  }

  get(key: K): V | undefined {
    const c = this.#changes.get(key);
    if (c === deleted) return undefined;
    return c !== undefined ? c : this.#base.get(key);
  }

  has(key: K): boolean {
    const c = this.#changes.get(key);
    return c === deleted ? false : c !== undefined || this.#base.has(key);
  }

  set(key: K, value: V): this {
    if (!this.has(key)) this.#size++;
    this.#changes.set(key, value);
    return this;
  }

  delete(key: K): boolean {
    if (!this.has(key)) return false;
    this.#size--;
    if (this.#base.has(key)) this.#changes.set(key, deleted);
    else this.#changes.delete(key);
    return true;
  }

  get size(): number {
    return this.#size;
  }

  *entries(): IterableIterator<[K, V]> {
    for (const [k, v] of this.#base) if (!this.#changes.has(k)) yield [k, v];
    for (const [k, v] of this.#changes) if (v !== deleted) yield [k, v];
  }

  *keys(): IterableIterator<K> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): IterableIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries();
  }

  /** Writes the changes into the base map and returns it. */
  commit(): Map<K, V> {
    for (const [k, v] of this.#changes) {
      if (v === deleted) this.#base.delete(k);
      else this.#base.set(k, v);
    }
    this.#changes.clear();
    return this.#base;
  }
}
