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

/**
 * A cached answer with its bookkeeping in one object (the answer's fields
 * are copied in, not referenced: one object per cached name).
 */
export class CacheEntry implements StoredAnswer {
  buf: Buffer;
  base: number;
  len: number;
  ttlCount: number;
  optStart: number;
  optEnd: number;
  rcode: number;
  kind: AnswerKind;
  storedAt: number;
  ttl: number;
  readonly key: string;
  readonly zone: ZoneCache;
  hits = 0;
  prefetching = false;
  /** Metric series of the last client origin that hit this entry. */
  slot: Slot | undefined = undefined;
  slotOrigin: object | undefined = undefined;

  constructor(key: string, zone: ZoneCache, a: StoredAnswer) {
    this.key = key;
    this.zone = zone;
    this.buf = a.buf;
    this.base = a.base;
    this.len = a.len;
    this.ttlCount = a.ttlCount;
    this.optStart = a.optStart;
    this.optEnd = a.optEnd;
    this.rcode = a.rcode;
    this.kind = a.kind;
    this.storedAt = a.storedAt;
    this.ttl = a.ttl;
  }

  /** Takes a refreshed answer in place. */
  replace(a: StoredAnswer): void {
    this.buf = a.buf;
    this.base = a.base;
    this.len = a.len;
    this.ttlCount = a.ttlCount;
    this.optStart = a.optStart;
    this.optEnd = a.optEnd;
    this.rcode = a.rcode;
    this.kind = a.kind;
    this.storedAt = a.storedAt;
    this.ttl = a.ttl;
    this.prefetching = false;
    this.slot = undefined;
    // Popularity is counted per lifetime: a name must earn its next prefetch.
    this.hits = 0;
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
