// DNS wire format on the hot path. Queries are parsed by hand (header,
// question, optional OPT) with every offset checked against the packet
// length, so a cache hit needs no full decode. Responses from upstreams are
// walked once to find the byte offset of every TTL, the OPT record and the
// SOA that bounds a negative answer (RFC 2308).

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_NOTIMP = 4;
export const RCODE_REFUSED = 5;
export const RCODE_BADVERS = 16;

export const TYPE_SOA = 6;
export const TYPE_OPT = 41;
export const TYPE_IXFR = 251;
export const TYPE_AXFR = 252;

/** The UDP payload size this cache advertises and asks upstreams for. */
export const OUR_UDP_SIZE = 1232;

export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_RA = 0x0080;
export const FLAG_CD = 0x0010;

export interface Query {
  readonly id: number;
  /** Header flags word of the query (opcode, RD, CD ...). */
  readonly flags: number;
  /** Offset just past the question (the question is msg[12, questionEnd)). */
  readonly questionEnd: number;
  /** Hash of the cache key (see queryKey), computed while parsing. */
  readonly hash: number;
  /** Length of the qname in wire form (part of key). */
  readonly nameLen: number;
  /** Hash of the lowercased qname alone (nameHash() of its wire form). */
  readonly nameHash: number;
  readonly qtype: number;
  readonly qclass: number;
  readonly hasEdns: boolean;
  /** Largest UDP answer the client takes (512 without EDNS). */
  readonly udpSize: number;
  readonly dnssecOk: boolean;
  readonly checkingDisabled: boolean;
}

/** Why a query was not accepted: answer with `rcode`, or drop it silently. */
export interface QueryRejection {
  readonly drop: boolean;
  readonly rcode: number;
  readonly id: number;
  readonly flags: number;
  /** > 12 when the question was valid and is echoed in the error answer. */
  readonly questionEnd: number;
  readonly hasEdns: boolean;
  readonly reason: string;
}

const scratch = Buffer.allocUnsafe(264);

/** A cache key is the wire name followed by this many bytes (qtype, qclass, DO/CD). */
export const KEY_SUFFIX = 5;

const FNV_PRIME = 0x01000193;
// FNV-1a from a per-process random start, so names that collide cannot be
// prepared in advance to turn lookups into long chain walks.
const FNV_OFFSET = (0x811c9dc5 ^ Math.floor(Math.random() * 0x100000000)) | 0;

/** The hash parseQuery gives a query whose cache key is `key`. */
export function keyHash(key: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), FNV_PRIME);
  return h | 0;
}

/** The hash parseQuery gives a query name, from its lowercased wire form (latin1). */
export function nameHash(wireName: string): number {
  return keyHash(wireName);
}

/** The DO/CD byte that ends a cache key. */
export function keyFlagsByte(dnssecOk: boolean, checkingDisabled: boolean): number {
  return (dnssecOk ? 1 : 0) | (checkingDisabled ? 2 : 0);
}

/**
 * A parsed query's cache key: lowercased qname wire bytes, qtype, qclass
 * and one DO/CD byte, as a latin1 string. Only misses need it: hits are
 * found by hash and compared with the cached question's bytes.
 */
export function queryKey(msg: Buffer, q: Query): string {
  const nameLen = q.nameLen;
  for (let i = 0; i < nameLen; i++) {
    const c = msg[12 + i];
    scratch[i] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
  }
  msg.copy(scratch, nameLen, 12 + nameLen, q.questionEnd);
  scratch[nameLen + 4] = keyFlagsByte(q.dnssecOk, q.checkingDisabled);
  return scratch.toString('latin1', 0, nameLen + KEY_SUFFIX);
}

/** Length of the wire name at the start of a cache key. */
export function keyNameLen(key: string): number {
  return key.length - KEY_SUFFIX;
}

/** DO and CD bits recorded in a cache key. */
export function keyFlags(key: string): { dnssecOk: boolean; checkingDisabled: boolean } {
  const f = key.charCodeAt(key.length - 1);
  return { dnssecOk: (f & 1) !== 0, checkingDisabled: (f & 2) !== 0 };
}

function reject(msg: Buffer, rcode: number, reason: string, questionEnd = 12, hasEdns = false): QueryRejection {
  return { drop: false, rcode, id: msg.readUInt16BE(0), flags: msg.readUInt16BE(2), questionEnd, hasEdns, reason };
}

const DROP_SHORT: QueryRejection = { drop: true, rcode: 0, id: 0, flags: 0, questionEnd: 12, hasEdns: false, reason: 'shorter than a header' };

/**
 * Skips a domain name starting at `off`; returns the offset after it, or -1
 * when it runs past `end`, uses a reserved label type, is longer than 255
 * bytes, or holds a pointer that does not point backwards. Pointers are not
 * followed (nothing here needs the name's text), so loops cannot happen.
 */
export function skipName(msg: Buffer, off: number, end: number): number {
  let total = 0;
  while (off < end) {
    const len = msg[off];
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) {
      if (off + 2 > end) return -1;
      const target = ((len & 0x3f) << 8) | msg[off + 1];
      return target < off && target >= 12 ? off + 2 : -1;
    }
    if (len & 0xc0) return -1;
    total += len + 1;
    if (total > 255) return -1;
    off += len + 1;
  }
  return -1;
}

/** Parses and validates a query. Only the header, question and OPT are read. */
export function parseQuery(msg: Buffer): Query | QueryRejection {
  const size = msg.length;
  if (size < 12) return DROP_SHORT;
  const flags = msg.readUInt16BE(2);
  if (flags & FLAG_QR) return { ...DROP_SHORT, reason: 'a response, not a query' };
  if ((flags >> 11) & 0xf) return reject(msg, RCODE_NOTIMP, 'opcode other than QUERY');
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  const ns = msg.readUInt16BE(8);
  const ar = msg.readUInt16BE(10);
  if (qd !== 1) return reject(msg, RCODE_FORMERR, `QDCOUNT ${qd}, want 1`);
  if (an !== 0 || ns !== 0) return reject(msg, RCODE_FORMERR, 'answer or authority records in a query');

  // The question's name is the first name in the message, so any pointer in
  // it is malformed: labels only, hashed lowercased as the cache key is.
  let off = 12;
  let h = FNV_OFFSET;
  for (;;) {
    if (off >= size) return reject(msg, RCODE_FORMERR, 'question name runs past the end');
    const len = msg[off];
    h = Math.imul(h ^ len, FNV_PRIME);
    if (len === 0) break;
    if (len > 63) return reject(msg, RCODE_FORMERR, 'compressed or reserved label in the question');
    if (off + 1 + len > size) return reject(msg, RCODE_FORMERR, 'question label runs past the end');
    if (off - 12 + len + 2 > 255) return reject(msg, RCODE_FORMERR, 'question name longer than 255 bytes');
    for (let i = off + 1; i <= off + len; i++) {
      const c = msg[i];
      h = Math.imul(h ^ (c >= 0x41 && c <= 0x5a ? c | 0x20 : c), FNV_PRIME);
    }
    off += len + 1;
  }
  const nameEnd = off + 1;
  const nameHashed = h | 0;
  if (nameEnd + 4 > size) return reject(msg, RCODE_FORMERR, 'question type/class missing');
  const qtype = msg.readUInt16BE(nameEnd);
  const qclass = msg.readUInt16BE(nameEnd + 2);
  const questionEnd = nameEnd + 4;

  let hasEdns = false;
  let udpSize = 512;
  let dnssecOk = false;
  off = questionEnd;
  for (let i = 0; i < ar; i++) {
    const rrStart = off;
    off = skipName(msg, off, size);
    if (off < 0 || off + 10 > size) return reject(msg, RCODE_FORMERR, 'additional record runs past the end', questionEnd);
    const type = msg.readUInt16BE(off);
    const rdlen = msg.readUInt16BE(off + 8);
    if (off + 10 + rdlen > size) return reject(msg, RCODE_FORMERR, 'additional record data runs past the end', questionEnd);
    if (type === TYPE_OPT) {
      if (hasEdns) return reject(msg, RCODE_FORMERR, 'more than one OPT record', questionEnd);
      if (msg[rrStart] !== 0) return reject(msg, RCODE_FORMERR, 'OPT record with a non-root owner', questionEnd);
      hasEdns = true;
      udpSize = Math.max(512, msg.readUInt16BE(off + 2));
      const version = msg[off + 5];
      dnssecOk = (msg[off + 6] & 0x80) !== 0;
      if (version !== 0) return reject(msg, RCODE_BADVERS, `EDNS version ${version}`, questionEnd, true);
    }
    off += 10 + rdlen;
  }
  if (off !== size) return reject(msg, RCODE_FORMERR, `${size - off} bytes after the last record`, questionEnd, hasEdns);
  if (qtype === TYPE_AXFR || qtype === TYPE_IXFR) return reject(msg, RCODE_NOTIMP, 'zone transfer', questionEnd, hasEdns);

  const checkingDisabled = (flags & FLAG_CD) !== 0;
  for (let i = nameEnd; i < questionEnd; i++) h = Math.imul(h ^ msg[i], FNV_PRIME);
  h = Math.imul(h ^ keyFlagsByte(dnssecOk, checkingDisabled), FNV_PRIME);
  return {
    id: msg.readUInt16BE(0), flags, questionEnd, hash: h | 0, nameLen: nameEnd - 12, nameHash: nameHashed, qtype, qclass,
    hasEdns, udpSize, dnssecOk, checkingDisabled,
  };
}

export function isRejection(q: Query | QueryRejection): q is QueryRejection {
  return (q as QueryRejection).reason !== undefined;
}

/** A minimal OPT record: root owner, our UDP size, extended rcode, DO. */
export function writeOpt(out: Buffer, off: number, extRcode: number, dnssecOk: boolean): number {
  out[off] = 0;
  out.writeUInt16BE(TYPE_OPT, off + 1);
  out.writeUInt16BE(OUR_UDP_SIZE, off + 3);
  out[off + 5] = extRcode;
  out[off + 6] = 0;
  out[off + 7] = dnssecOk ? 0x80 : 0;
  out[off + 8] = 0;
  out.writeUInt16BE(0, off + 9);
  return off + 11;
}

/**
 * An answer with no records: header (ID and RD/CD echoed), the question
 * when it was valid, an OPT when the client used EDNS. Used for FORMERR,
 * SERVFAIL, REFUSED, NOTIMP, BADVERS and for truncated (TC) answers.
 */
export function emptyAnswer(
  query: Buffer, id: number, queryFlags: number, questionEnd: number, rcode: number,
  hasEdns: boolean, truncated = false, dnssecOk = false,
): Buffer {
  const qlen = questionEnd > 12 ? questionEnd - 12 : 0;
  const out = Buffer.allocUnsafe(12 + qlen + (hasEdns ? 11 : 0));
  out.writeUInt16BE(id, 0);
  const flags = FLAG_QR | (queryFlags & (0x7800 | FLAG_RD | FLAG_CD)) | FLAG_RA | (truncated ? FLAG_TC : 0) | (rcode & 0xf);
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(qlen ? 1 : 0, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(hasEdns ? 1 : 0, 10);
  if (qlen) query.copy(out, 12, 12, questionEnd);
  if (hasEdns) writeOpt(out, 12 + qlen, rcode >> 4, dnssecOk);
  return out;
}

export function rejectionAnswer(query: Buffer, r: QueryRejection): Buffer {
  return emptyAnswer(query, r.id, r.flags, r.questionEnd, r.rcode, r.hasEdns);
}

/** The query this cache sends upstream: RD set, our EDNS size, DO/CD as asked. */
export function upstreamQuery(question: Buffer, dnssecOk: boolean, checkingDisabled: boolean): Buffer {
  const out = Buffer.allocUnsafe(12 + question.length + 11);
  out.writeUInt16BE(0, 0);
  out.writeUInt16BE(FLAG_RD | (checkingDisabled ? FLAG_CD : 0), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(1, 10);
  question.copy(out, 12);
  writeOpt(out, 12 + question.length, 0, dnssecOk);
  return out;
}

export interface ResponseInfo {
  /** Full rcode (with the OPT's extended bits). */
  readonly rcode: number;
  readonly truncated: boolean;
  readonly answers: number;
  /** Offsets of the 4-byte TTL of every record except OPT. */
  readonly ttlOffsets: number[];
  /** Byte range of the OPT record, or -1. */
  readonly optStart: number;
  readonly optEnd: number;
  /** Offset of the TTL of the SOA in the authority section, or -1. */
  readonly soaTtlOffset: number;
  /** The SOA's MINIMUM field, or -1. */
  readonly soaMinimum: number;
  /** Bytes that belong to the message (trailing garbage excluded). */
  readonly length: number;
}

/**
 * Compares two questions of `len` bytes (wire name, qtype, qclass): the
 * name ignoring ASCII case, qtype and qclass exactly.
 */
export function sameQuestion(a: Buffer, aStart: number, b: Buffer, bStart: number, len: number): boolean {
  if (len < 5 || aStart + len > a.length || bStart + len > b.length) return false;
  const nameLen = len - 4;
  for (let i = 0; i < len; i++) {
    let x = a[aStart + i];
    let y = b[bStart + i];
    if (x === y) continue;
    if (i >= nameLen) return false;
    if (x >= 0x41 && x <= 0x5a) x |= 0x20;
    if (y >= 0x41 && y <= 0x5a) y |= 0x20;
    if (x !== y) return false;
  }
  return true;
}

/**
 * Walks an upstream response whose question must equal `question`
 * (case-insensitively). Returns undefined when it is malformed.
 */
export function analyzeResponse(msg: Buffer, question: Buffer): ResponseInfo | undefined {
  const size = msg.length;
  if (size < 12) return undefined;
  const flags = msg.readUInt16BE(2);
  if (!(flags & FLAG_QR)) return undefined;
  const truncated = (flags & FLAG_TC) !== 0;
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  const ns = msg.readUInt16BE(8);
  const ar = msg.readUInt16BE(10);
  if (qd !== 1 || !sameQuestion(msg, 12, question, 0, question.length)) return undefined;
  let off = 12 + question.length;
  const ttlOffsets: number[] = [];
  let optStart = -1;
  let optEnd = -1;
  let soaTtlOffset = -1;
  let soaMinimum = -1;
  let rcode = flags & 0xf;
  const total = an + ns + ar;
  for (let i = 0; i < total; i++) {
    const rrStart = off;
    off = skipName(msg, off, size);
    if (off < 0 || off + 10 > size) {
      // A truncated answer may end mid-record; what came before is usable.
      if (truncated) break;
      return undefined;
    }
    const type = msg.readUInt16BE(off);
    const rdlen = msg.readUInt16BE(off + 8);
    const rdEnd = off + 10 + rdlen;
    if (rdEnd > size) {
      if (truncated) break;
      return undefined;
    }
    if (type === TYPE_OPT && i >= an + ns) {
      if (optStart >= 0) return undefined;
      optStart = rrStart;
      optEnd = rdEnd;
      rcode |= msg[off + 5] << 4;
    } else {
      ttlOffsets.push(off + 4);
      if (type === TYPE_SOA && i >= an && i < an + ns && rdlen >= 22) {
        soaTtlOffset = off + 4;
        soaMinimum = msg.readUInt32BE(rdEnd - 4);
      }
    }
    off = rdEnd;
  }
  return { rcode, truncated, answers: an, ttlOffsets, optStart, optEnd, soaTtlOffset, soaMinimum, length: Math.min(off, size) };
}
