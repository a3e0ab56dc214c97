// The names one Kubernetes zone answers, found without building a string
// per query: a hash table keyed by the hash parseQuery already computed of
// the lowercased question name (Query.nameHash), chained through the
// nodes, and matched against the question's bytes.
import { nameHash } from './wire.ts';
import type { Synth } from './synth.ts';

export class NameNode {
  /** Lowercased wire form of the name (latin1). */
  readonly key: string;
  readonly hash: number;
  next: NameNode | undefined = undefined;
  /** What the name stands for (its owner's business). */
  readonly source: unknown;
  /** Answers per query type, made on first use; dropped when the records change. */
  synth: Array<{ readonly qtype: number; readonly s: Synth }> | undefined = undefined;

  constructor(key: string, source: unknown) {
    this.key = key;
    this.hash = nameHash(key);
    this.source = source;
  }
}

/** Whether `key` equals the lowercased wire name at msg[12, 12 + key.length). */
function matches(key: string, msg: Buffer): boolean {
  for (let i = 0; i < key.length; i++) {
    let c = msg[12 + i];
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== key.charCodeAt(i)) return false;
  }
  return true;
}

const MIN_BUCKETS = 256;

export class NameTable {
  private buckets: Array<NameNode | undefined> = Array.from({ length: MIN_BUCKETS }, () => undefined);
  private mask = MIN_BUCKETS - 1;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** The node of the question name of `msg` (hash and length from its parsed Query). */
  find(hash: number, nameLen: number, msg: Buffer): NameNode | undefined {
    let n = this.buckets[hash & this.mask];
    while (n !== undefined) {
      if (n.hash === hash && n.key.length === nameLen && matches(n.key, msg)) return n;
      n = n.next;
    }
    return undefined;
  }

  /** The node of a lowercased wire name. */
  get(key: string): NameNode | undefined {
    const hash = nameHash(key);
    let n = this.buckets[hash & this.mask];
    while (n !== undefined && !(n.hash === hash && n.key === key)) n = n.next;
    return n;
  }

  forEach(fn: (n: NameNode) => void): void {
    for (let n of this.buckets) {
      while (n !== undefined) {
        const next = n.next;
        fn(n);
        n = next;
      }
    }
  }

  add(node: NameNode): void {
    if (this.count >= this.buckets.length) this.resize(this.buckets.length * 2);
    const b = node.hash & this.mask;
    node.next = this.buckets[b];
    this.buckets[b] = node;
    this.count++;
  }

  remove(node: NameNode): void {
    const b = node.hash & this.mask;
    let p = this.buckets[b];
    if (p === node) this.buckets[b] = node.next;
    else {
      while (p !== undefined && p.next !== node) p = p.next;
      if (p === undefined) return;
      p.next = node.next;
    }
    node.next = undefined;
    this.count--;
    if (this.buckets.length > MIN_BUCKETS && this.count < this.buckets.length / 4) this.resize(this.buckets.length / 2);
  }

  private resize(size: number): void {
    const old = this.buckets;
    this.buckets = Array.from({ length: size }, () => undefined);
    this.mask = size - 1;
    for (let n of old) {
      while (n !== undefined) {
        const next = n.next;
        const b = n.hash & this.mask;
        n.next = this.buckets[b];
        this.buckets[b] = n;
        n = next;
      }
    }
  }
}
