// The answer cache: one map for lookups, with per-zone accounting so each
// zone has its own capacity. Expired entries stay for the zone's serve-stale
// window; eviction takes the oldest insertion of the zone that is full.
import { remaining, type AnswerKind, type StoredAnswer } from './answer.ts';
import type { Slot } from './metrics.ts';
import { keyNameLen } from './wire.ts';

export interface ZoneCachePolicy {
  readonly capacity: number;
  /** Seconds past expiry an entry may still be served while upstreams fail. */
  readonly serveStale: number;
  /** Hits within one TTL that make an entry worth prefetching (0 = never). */
  readonly prefetchAmount: number;
  /** Prefetch when this percentage of the original TTL is left. */
  readonly prefetchPercentage: number;
}

const KINDS: readonly AnswerKind[] = ['success', 'denial', 'other'];

// Offsets (before base) of the fields kept in the answer's slab memory: a
// heap object costs 8 bytes per field, so an entry object holds only what
// must be a reference.
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

/**
 * A cached answer with its bookkeeping: references in the object, the
 * numbers in the ANSWER_META bytes in front of the stored message.
 */
export class CacheEntry implements StoredAnswer {
  buf: Buffer;
  base: number;
  readonly key: string;
  readonly zone: ZoneCache;
  /** Metric series of the last client origin that hit this entry. */
  slot: Slot | undefined;
  slotOrigin: object | undefined;

  constructor(key: string, zone: ZoneCache, a: StoredAnswer) {
    this.key = key;
    this.zone = zone;
    this.buf = a.buf;
    this.base = a.base;
    this.slot = undefined;
    this.slotOrigin = undefined;
    this.take(a);
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
  replace(a: StoredAnswer): void {
    this.buf = a.buf;
    this.base = a.base;
    this.slot = undefined;
    this.take(a);
  }

  private take(a: StoredAnswer): void {
    const b = this.buf;
    const at = this.base;
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
  return e.buf.subarray(e.base + 12, e.base + 12 + keyNameLen(e.key) + 4);
}

export class ZoneCache {
  readonly name: string;
  policy: ZoneCachePolicy;
  readonly keys = new Set<string>();
  success = 0;
  denial = 0;
  constructor(name: string, policy: ZoneCachePolicy) {
    this.name = name;
    this.policy = policy;
  }
}

export type Lookup =
  | { readonly state: 'fresh'; readonly entry: CacheEntry; readonly prefetch: boolean }
  | { readonly state: 'stale'; readonly entry: CacheEntry }
  | { readonly state: 'miss' };

const MISS: Lookup = { state: 'miss' };

export class AnswerCache {
  private readonly entries = new Map<string, CacheEntry>();
  private readonly zones = new Map<string, ZoneCache>();
  evictions = 0;

  /** The zone's bookkeeping, created or updated with the new policy (reload). */
  zone(name: string, policy: ZoneCachePolicy): ZoneCache {
    let z = this.zones.get(name);
    if (!z) {
      z = new ZoneCache(name, policy);
      this.zones.set(name, z);
    } else {
      z.policy = policy;
      while (z.keys.size > policy.capacity) this.evictOne(z);
    }
    return z;
  }

  /** Drops zones no longer configured, with their entries. */
  retainZones(names: ReadonlySet<string>): void {
    for (const [name, z] of this.zones) {
      if (names.has(name)) continue;
      for (const key of z.keys) this.remove(key);
      this.zones.delete(name);
    }
  }

  get(key: string, now: number): Lookup {
    const e = this.entries.get(key);
    if (e === undefined) return MISS;
    const left = remaining(e, now);
    if (left > 0) {
      e.hits++;
      const p = e.zone.policy;
      const prefetch = p.prefetchAmount > 0 && !e.prefetching && e.hits >= p.prefetchAmount &&
        left <= Math.max(1, (e.ttl * p.prefetchPercentage) / 100);
      return { state: 'fresh', entry: e, prefetch };
    }
    if (-left <= e.zone.policy.serveStale) return { state: 'stale', entry: e };
    this.remove(key);
    return MISS;
  }

  /** The entry if it is fresh or still inside its zone's serve-stale window. */
  usable(key: string, now: number): CacheEntry | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    return remaining(e, now) > -e.zone.policy.serveStale ? e : undefined;
  }

  set(key: string, zone: ZoneCache, answer: StoredAnswer): void {
    if (zone.policy.capacity <= 0) return;
    const old = this.entries.get(key);
    if (old && old.zone !== zone) this.remove(key);
    else if (old) {
      this.count(old, -1);
      old.replace(answer);
      this.count(old, 1);
      return;
    }
    while (zone.keys.size >= zone.policy.capacity) this.evictOne(zone);
    const e = new CacheEntry(key, zone, answer);
    this.entries.set(key, e);
    zone.keys.add(key);
    this.count(e, 1);
  }

  remove(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    e.zone.keys.delete(key);
    this.count(e, -1);
  }

  get size(): number {
    return this.entries.size;
  }

  zoneCaches(): Iterable<ZoneCache> {
    return this.zones.values();
  }

  private count(e: CacheEntry, d: number): void {
    if (e.kind === 'denial') e.zone.denial += d;
    else e.zone.success += d;
  }

  private evictOne(z: ZoneCache): void {
    const first = z.keys.values().next();
    if (first.done) return;
    this.remove(first.value);
    this.evictions++;
  }
}
