// The answer cache: a hash table of entries (chained through the entries
// themselves), with per-zone accounting so each zone has its own capacity.
// Expired entries stay for the zone's serve-stale window; eviction takes the
// oldest insertion of the zone that is full (a list through the entries).
// Keys are not kept as strings: an entry is matched against the question
// bytes of its own cached answer, so a hit allocates nothing. Per name that
// is one object and a table slot: 100,000 names cost no 100,000 key strings,
// Map or Set entries.
import { remaining, type AnswerKind, type StoredAnswer } from './answer.ts';
import type { Slot } from './metrics.ts';
import { KEY_SUFFIX, keyFlagsByte, keyHash, keyNameLen, sameQuestion, type Query } from './wire.ts';

export interface ZoneCachePolicy {
  readonly capacity: number;
  /** Seconds past expiry an entry may still be served while upstreams fail. */
  readonly serveStale: number;
  /** TTL of a stale answer (seconds). */
  readonly staleTtl: number;
  /** Hits within one TTL that make an entry worth prefetching (0 = never). */
  readonly prefetchAmount: number;
  /** Prefetch when this percentage of the original TTL is left. */
  readonly prefetchPercentage: number;
}

const KINDS: readonly AnswerKind[] = ['success', 'denial', 'other'];

// Offsets (before base) of the fields kept in the answer's slab memory: a
// heap object costs 8 bytes per field, so an entry object holds only what
// must be a reference.
const HASH = 36;
const STORED_AT = 32;
const TTL = 24;
const LEN = 20;
const TTL_COUNT = 18;
const OPT_START = 16;
const OPT_END = 14;
const RCODE = 12;
const KIND = 10;
const PREFETCHING = 9;
const HITS = 8;
const KEY_FLAGS = 4;
const NAME_LEN = 3;

/**
 * A cached answer with its bookkeeping: references in the object, the
 * numbers in the ANSWER_META bytes in front of the stored message.
 */
export class CacheEntry implements StoredAnswer {
  buf: Buffer;
  base: number;
  readonly zone: ZoneCache;
  /** Metric series of the last client origin that hit this entry. */
  slot: Slot | undefined;
  /** The next entry in the same hash table bucket. */
  next: CacheEntry | undefined;
  /** Neighbours in the zone's insertion order. */
  older: CacheEntry | undefined;
  newer: CacheEntry | undefined;

  constructor(key: string, hash: number, zone: ZoneCache, a: StoredAnswer) {
    this.zone = zone;
    this.buf = a.buf;
    this.base = a.base;
    this.slot = undefined;
    this.next = undefined;
    this.older = undefined;
    this.newer = undefined;
    this.take(a, key, hash);
  }

  /** The hash of the key it was stored under. */
  get hash(): number { return this.buf.readInt32LE(this.base - HASH); }
  /** Length of the question's wire name. */
  get nameLen(): number { return this.buf[this.base - NAME_LEN]; }
  /** The DO/CD byte of the key. */
  get keyFlags(): number { return this.buf[this.base - KEY_FLAGS]; }

  /** The cache key, rebuilt from the cached question (misses and refreshes only). */
  get key(): string {
    const n = this.nameLen;
    const at = this.base + 12;
    let name = '';
    for (let i = 0; i < n; i++) {
      const c = this.buf[at + i];
      name += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c | 0x20 : c);
    }
    return name + this.buf.toString('latin1', at + n, at + n + 4) + String.fromCharCode(this.keyFlags);
  }

  /** Whether this entry answers `q` (same question, any case; same DO/CD). */
  answers(msg: Buffer, q: Query): boolean {
    return this.nameLen === q.nameLen && this.keyFlags === keyFlagsByte(q.dnssecOk, q.checkingDisabled) &&
      sameQuestion(msg, 12, this.buf, this.base + 12, q.nameLen + 4);
  }

  /** Whether this entry's key is `key`. */
  hasKey(key: string): boolean {
    const n = keyNameLen(key);
    if (this.nameLen !== n || this.keyFlags !== key.charCodeAt(key.length - 1)) return false;
    const at = this.base + 12;
    for (let i = 0; i < n + KEY_SUFFIX - 1; i++) {
      let c = this.buf[at + i];
      if (i < n && c >= 0x41 && c <= 0x5a) c |= 0x20;
      if (c !== key.charCodeAt(i)) return false;
    }
    return true;
  }

  get storedAt(): number { return this.buf.readDoubleLE(this.base - STORED_AT); }
  get ttl(): number { return this.buf.readUInt32LE(this.base - TTL); }
  get len(): number { return this.buf.readUInt16LE(this.base - LEN); }
  get ttlCount(): number { return this.buf.readUInt16LE(this.base - TTL_COUNT); }
  get optStart(): number { return this.buf.readInt16LE(this.base - OPT_START); }
  get optEnd(): number { return this.buf.readInt16LE(this.base - OPT_END); }
  get rcode(): number { return this.buf.readUInt16LE(this.base - RCODE); }
  get kind(): AnswerKind { return KINDS[this.buf[this.base - KIND]]; }
  get prefetching(): boolean { return this.buf[this.base - PREFETCHING] === 1; }
  set prefetching(v: boolean) { this.buf[this.base - PREFETCHING] = v ? 1 : 0; }
  /** Hits within this lifetime (saturating). */
  get hits(): number { return this.buf.readUInt32LE(this.base - HITS); }
  set hits(v: number) { this.buf.writeUInt32LE(Math.min(v, 0xffffffff), this.base - HITS); }

  /** Takes a refreshed answer in place. */
  replace(a: StoredAnswer, key: string, hash: number): void {
    this.buf = a.buf;
    this.base = a.base;
    this.slot = undefined;
    this.take(a, key, hash);
  }

  private take(a: StoredAnswer, key: string, hash: number): void {
    const b = this.buf;
    const at = this.base;
    b.writeInt32LE(hash, at - HASH);
    b[at - KEY_FLAGS] = key.charCodeAt(key.length - 1);
    b[at - NAME_LEN] = keyNameLen(key);
    b.writeDoubleLE(a.storedAt, at - STORED_AT);
    b.writeUInt32LE(a.ttl, at - TTL);
    b.writeUInt16LE(a.len, at - LEN);
    b.writeUInt16LE(a.ttlCount, at - TTL_COUNT);
    b.writeInt16LE(a.optStart, at - OPT_START);
    b.writeInt16LE(a.optEnd, at - OPT_END);
    b.writeUInt16LE(a.rcode, at - RCODE);
    b[at - KIND] = KINDS.indexOf(a.kind);
    // Popularity is counted per lifetime: a name must earn its next prefetch.
    b[at - PREFETCHING] = 0;
    b.writeUInt32LE(0, at - HITS);
  }
}

/** The question of a cached entry (as the upstream echoed it), for refreshes. */
export function entryQuestion(e: CacheEntry): Buffer {
  return e.buf.subarray(e.base + 12, e.base + 12 + e.nameLen + 4);
}

export class ZoneCache {
  readonly name: string;
  policy: ZoneCachePolicy;
  /** Entries in insertion order, linked through older/newer. */
  oldest: CacheEntry | undefined;
  newest: CacheEntry | undefined;
  size = 0;
  success = 0;
  denial = 0;
  constructor(name: string, policy: ZoneCachePolicy) {
    this.name = name;
    this.policy = policy;
  }

  append(e: CacheEntry): void {
    e.older = this.newest;
    e.newer = undefined;
    if (this.newest) this.newest.newer = e;
    else this.oldest = e;
    this.newest = e;
    this.size++;
  }

  unlink(e: CacheEntry): void {
    if (e.older) e.older.newer = e.newer;
    else this.oldest = e.newer;
    if (e.newer) e.newer.older = e.older;
    else this.newest = e.older;
    e.older = e.newer = undefined;
    this.size--;
  }
}

/** Whether an expired entry (`left` <= 0 seconds to live) may still be served. */
function inStaleWindow(e: CacheEntry, left: number): boolean {
  return -left <= e.zone.policy.serveStale;
}

const MIN_BUCKETS = 1024;

export class AnswerCache {
  /** Hash table: bucket (hash & mask) -> first entry; the rest chain through `next`. */
  private buckets: Array<CacheEntry | undefined> = Array.from({ length: MIN_BUCKETS }, () => undefined);
  private mask = MIN_BUCKETS - 1;
  private readonly zones = new Map<string, ZoneCache>();
  private count = 0;
  evictions = 0;

  /** The zone's bookkeeping, created or updated with the new policy (reload). */
  zone(name: string, policy: ZoneCachePolicy): ZoneCache {
    let z = this.zones.get(name);
    if (!z) {
      z = new ZoneCache(name, policy);
      this.zones.set(name, z);
    } else {
      z.policy = policy;
      while (z.size > policy.capacity) this.evictOne(z);
    }
    return z;
  }

  /** Drops zones no longer configured, with their entries. */
  retainZones(names: ReadonlySet<string>): void {
    for (const [name, z] of this.zones) {
      if (names.has(name)) continue;
      while (z.oldest) this.remove(z.oldest);
      this.zones.delete(name);
    }
  }

  /**
   * Looks a parsed query up (its hash, then its question bytes): the entry
   * while it is fresh or inside its zone's serve-stale window (see
   * remaining()), else undefined (an entry past the window is dropped).
   */
  get(msg: Buffer, q: Query, now: number): CacheEntry | undefined {
    let e = this.buckets[q.hash & this.mask];
    while (e !== undefined && !(e.hash === q.hash && e.answers(msg, q))) e = e.next;
    if (e === undefined) return undefined;
    const left = remaining(e, now);
    if (left > 0 || inStaleWindow(e, left)) return e;
    this.remove(e);
    return undefined;
  }

  /**
   * Counts a hit on a fresh entry with `left` seconds to live; true when the
   * entry has become popular enough to be refreshed before it expires.
   */
  hit(e: CacheEntry, left: number): boolean {
    e.hits++;
    const p = e.zone.policy;
    return p.prefetchAmount > 0 && !e.prefetching && e.hits >= p.prefetchAmount &&
      left <= Math.max(1, (e.ttl * p.prefetchPercentage) / 100);
  }

  private find(key: string, hash = keyHash(key)): CacheEntry | undefined {
    let e = this.buckets[hash & this.mask];
    while (e !== undefined && !(e.hash === hash && e.hasKey(key))) e = e.next;
    return e;
  }

  /** The entry if it is fresh or still inside its zone's serve-stale window. */
  usable(key: string, now: number): CacheEntry | undefined {
    const e = this.find(key);
    if (e === undefined) return undefined;
    const left = remaining(e, now);
    return left > 0 || inStaleWindow(e, left) ? e : undefined;
  }

  set(key: string, zone: ZoneCache, answer: StoredAnswer): void {
    if (zone.policy.capacity <= 0) return;
    const hash = keyHash(key);
    const old = this.find(key, hash);
    if (old && old.zone !== zone) this.remove(old);
    else if (old) {
      this.account(old, -1);
      old.replace(answer, key, hash);
      this.account(old, 1);
      return;
    }
    while (zone.size >= zone.policy.capacity) this.evictOne(zone);
    if (this.count >= this.buckets.length) this.grow();
    const e = new CacheEntry(key, hash, zone, answer);
    const b = hash & this.mask;
    e.next = this.buckets[b];
    this.buckets[b] = e;
    zone.append(e);
    this.count++;
    this.account(e, 1);
  }

  private remove(e: CacheEntry): void {
    const b = e.hash & this.mask;
    let p = this.buckets[b];
    if (p === e) this.buckets[b] = e.next;
    else {
      while (p !== undefined && p.next !== e) p = p.next;
      // Not in its bucket cannot happen; the zone's bookkeeping is fixed regardless.
      if (p !== undefined) p.next = e.next;
    }
    e.next = undefined;
    e.zone.unlink(e);
    this.count--;
    this.account(e, -1);
  }

  /** Doubles the table (at one entry per bucket on average) and relinks every entry. */
  private grow(): void {
    const old = this.buckets;
    this.buckets = Array.from({ length: old.length * 2 }, () => undefined);
    this.mask = this.buckets.length - 1;
    for (let e of old) {
      while (e !== undefined) {
        const next = e.next;
        const b = e.hash & this.mask;
        e.next = this.buckets[b];
        this.buckets[b] = e;
        e = next;
      }
    }
  }

  get size(): number {
    return this.count;
  }

  zoneCaches(): Iterable<ZoneCache> {
    return this.zones.values();
  }

  private account(e: CacheEntry, d: number): void {
    if (e.kind === 'denial') e.zone.denial += d;
    else e.zone.success += d;
  }

  private evictOne(z: ZoneCache): void {
    if (!z.oldest) return;
    this.remove(z.oldest);
    this.evictions++;
  }
}
