// An upstream answer kept in encoded form, with the offsets of its TTLs, and
// the cheap per-client rendering: copy, patch ID, question case, RD, the
// counted-down TTLs, drop OPT for clients without EDNS, truncate to the
// client's UDP size.
import { allocLongLived } from './slab.ts';
import {
  emptyAnswer, OUR_UDP_SIZE, RCODE_NOERROR, RCODE_NXDOMAIN, type Query, type ResponseInfo,
} from './wire.ts';

export type AnswerKind = 'success' | 'denial' | 'other';

/** Bytes reserved in front of every stored message (see CacheEntry). */
export const ANSWER_META = 36;

export interface StoredAnswer {
  /**
   * Holds the message at [base, base + len), then each TTL's offset (u16,
   * relative to base); [base - ANSWER_META, base) is free for the cache.
   */
  readonly buf: Buffer;
  readonly base: number;
  readonly len: number;
  readonly ttlCount: number;
  readonly optStart: number;
  readonly optEnd: number;
  readonly rcode: number;
  readonly kind: AnswerKind;
  /** When the TTLs in buf were true (ms since epoch). */
  readonly storedAt: number;
  /** Lifetime in seconds: the smallest TTL in buf. */
  readonly ttl: number;
}

export interface TtlLimits {
  /** Upper bound for answers with data (seconds). */
  readonly successTtl: number;
  /** Upper bound for NXDOMAIN/NODATA (seconds). */
  readonly denialTtl: number;
  /** Lower bound for a cached TTL (seconds); 0 keeps TTL-0 answers uncached. */
  readonly minTtl: number;
}

export function classify(info: ResponseInfo): AnswerKind {
  if (info.rcode === RCODE_NXDOMAIN) return 'denial';
  if (info.rcode === RCODE_NOERROR) return info.answers > 0 ? 'success' : 'denial';
  return 'other';
}

/**
 * Builds a StoredAnswer from an upstream message: TTLs are capped in the
 * copy, a denial's TTLs are bounded by the SOA (RFC 2308: min of the SOA's
 * own TTL and its MINIMUM), and the OPT advertises our UDP size.
 */
export function storeAnswer(msg: Buffer, info: ResponseInfo, limits: TtlLimits, now: number): StoredAnswer {
  const kind = classify(info);
  let cap = kind === 'denial' ? limits.denialTtl : limits.successTtl;
  if (kind === 'denial') {
    // Without an SOA a denial must not be cached (RFC 2308 section 5).
    if (info.soaTtlOffset < 0) cap = 0;
    else cap = Math.min(cap, msg.readUInt32BE(info.soaTtlOffset), info.soaMinimum);
  }
  if (kind === 'other') cap = 0;
  // One allocation per answer: the message with its TTL offsets behind it,
  // from long-lived memory when it is going to be cached.
  const len = info.length;
  const ttlCount = info.ttlOffsets.length;
  const size = len + 2 * ttlCount;
  // ANSWER_META bytes in front stay free for the cache's per-entry fields.
  const span = cap > 0 ? allocLongLived(ANSWER_META + size) : { buf: Buffer.allocUnsafe(ANSWER_META + size), base: 0 };
  const buf = span.buf;
  const base = span.base + ANSWER_META;
  msg.copy(buf, base, 0, len);
  for (let i = 0; i < ttlCount; i++) buf.writeUInt16BE(info.ttlOffsets[i], base + len + 2 * i);
  let min = cap;
  for (const rel of info.ttlOffsets) {
    const off = base + rel;
    let ttl = buf.readUInt32BE(off);
    if (ttl > 0x7fffffff) ttl = 0; // RFC 2181: a TTL with the top bit set is zero
    if (ttl > cap) ttl = cap;
    if (ttl < limits.minTtl && cap > 0) ttl = Math.min(limits.minTtl, cap);
    buf.writeUInt32BE(ttl, off);
    if (ttl < min) min = ttl;
  }
  if (info.optStart >= 0) buf.writeUInt16BE(OUR_UDP_SIZE, base + info.optStart + 3);
  return { buf, base, len, ttlCount, optStart: info.optStart, optEnd: info.optEnd, rcode: info.rcode, kind, storedAt: now, ttl: min };
}

/**
 * Renders `a` for one client. `staleTtl` >= 0 sets every TTL to it (a stale
 * answer); otherwise TTLs count down from storedAt. `limit` is the largest
 * message the transport takes (client's UDP size, or 65535 on TCP). With
 * `into` the answer is written there and a view of it returned.
 */
export function renderAnswer(a: StoredAnswer, query: Buffer, q: Query, limit: number, now: number, staleTtl = -1, into?: Buffer): Buffer {
  const src = a.buf;
  const b = a.base;
  const strip = !q.hasEdns && a.optStart >= 0;
  const cut = strip ? a.optEnd - a.optStart : 0;
  const len = a.len - cut;
  if (len > limit) {
    return emptyAnswer(query, q.id, q.flags, q.questionEnd, a.rcode & 0xf, q.hasEdns, true, q.dnssecOk);
  }
  const out = into !== undefined && into.length >= len ? into.subarray(0, len) : Buffer.allocUnsafe(len);
  if (strip) {
    src.copy(out, 0, b, b + a.optStart);
    src.copy(out, a.optStart, b + a.optEnd, b + a.len);
    out.writeUInt16BE(out.readUInt16BE(10) - 1, 10);
    // Only the extended rcode bits lived in the OPT; the header keeps the rest.
  } else {
    src.copy(out, 0, b, b + a.len);
  }
  out.writeUInt16BE(q.id, 0);
  out[2] = (out[2] & 0xfe) | ((q.flags >> 8) & 0x01);
  query.copy(out, 12, 12, q.questionEnd);
  const elapsed = staleTtl >= 0 ? 0 : Math.floor((now - a.storedAt) / 1000);
  for (let i = 0; i < a.ttlCount; i++) {
    const at = src.readUInt16BE(b + a.len + 2 * i);
    const off = strip && at > a.optStart ? at - cut : at;
    let ttl: number;
    if (staleTtl >= 0) ttl = staleTtl;
    else {
      ttl = src.readUInt32BE(b + at) - elapsed;
      if (ttl < 0) ttl = 0;
    }
    out.writeUInt32BE(ttl, off);
  }
  return out;
}

/** Seconds an answer still has to live at `now` (may be negative). */
export function remaining(a: StoredAnswer, now: number): number {
  return a.ttl - (now - a.storedAt) / 1000;
}
