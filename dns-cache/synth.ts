// Answers made here rather than forwarded: the record sections are encoded
// once (records owned by the query name point at the question with a
// compression pointer, so one encoding serves every spelling of the name),
// and each query only gets a header, its own question and an OPT around
// them: as cheap as rendering a cached answer.
import dnsPacket from 'dns-packet';
import {
  emptyAnswer, FLAG_AA, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, writeOpt, type Query,
} from './wire.ts';

export interface Synth {
  readonly rcode: number;
  /** Records in the answer, authority and additional sections of `body`. */
  readonly an: number;
  readonly ns: number;
  readonly ar: number;
  /** The encoded sections, in order. */
  readonly body: Buffer;
  /** An ExternalName's target: the answer also holds the target's records (resolver.ts). */
  readonly cname?: string;
  /** The metric series of the last origin and type this answer went to (resolver.ts). */
  slot?: unknown;
  slotQtype?: number;
}

/** A record as dns-packet encodes it; `name` undefined: owned by the query name. */
export interface Rr {
  readonly name?: string;
  readonly type: string;
  readonly ttl: number;
  readonly data: unknown;
}

const POINTER_TO_QUESTION = Buffer.from([0xc0, 0x0c]);

/** One record's wire form, its owner as a pointer to the question when `name` is undefined. */
export function encodeRr(rr: Rr): Buffer {
  const packet = dnsPacket.encode({
    type: 'response', id: 0, flags: 0,
    answers: [{ name: rr.name ?? '.', type: rr.type, class: 'IN', ttl: rr.ttl, data: rr.data } as dnsPacket.Answer],
  } as dnsPacket.Packet);
  const bytes = packet.subarray(12);
  // dns-packet never compresses: the owner is the root's single zero byte.
  return rr.name === undefined ? Buffer.concat([POINTER_TO_QUESTION, bytes.subarray(1)]) : Buffer.from(bytes);
}

export function makeSynth(rcode: number, answers: readonly Rr[], authority: readonly Rr[] = [], additional: readonly Rr[] = [], cname?: string): Synth {
  const body = Buffer.concat([...answers, ...authority, ...additional].map(encodeRr));
  return { rcode, an: answers.length, ns: authority.length, ar: additional.length, body, ...(cname === undefined ? {} : { cname }) };
}

/**
 * The answer to `msg` from `s`: written into `into` when it fits there (a
 * view of it is returned; the caller sends or copies it before the next
 * call), else a new buffer. Larger than `limit`: an empty answer with TC.
 */
export function renderSynth(s: Synth, msg: Buffer, q: Query, limit: number, into: Buffer | undefined, extra?: Buffer, extraAn = 0): Buffer {
  const qEnd = q.questionEnd;
  const extraLen = extra === undefined ? 0 : extra.length;
  const len = qEnd + s.body.length + extraLen + (q.hasEdns ? 11 : 0);
  if (len > limit) return emptyAnswer(msg, q.id, q.flags, qEnd, s.rcode, q.hasEdns, true, q.dnssecOk);
  const out = into !== undefined && into.length >= len ? into.subarray(0, len) : Buffer.allocUnsafe(len);
  out.writeUInt16BE(q.id, 0);
  out.writeUInt16BE(FLAG_QR | FLAG_AA | (q.flags & (FLAG_RD | FLAG_CD)) | FLAG_RA | (s.rcode & 0xf), 2);
  out.writeUInt16BE(1, 4);
  msg.copy(out, 12, 12, qEnd);
  let off = qEnd;
  if (extra === undefined) {
    s.body.copy(out, off);
    off += s.body.length;
    out.writeUInt16BE(s.an, 6);
  } else {
    // An ExternalName: its CNAME (the body's only answer) then the target's records.
    s.body.copy(out, off);
    off += s.body.length;
    extra.copy(out, off);
    off += extra.length;
    out.writeUInt16BE(s.an + extraAn, 6);
  }
  out.writeUInt16BE(s.ns, 8);
  out.writeUInt16BE(s.ar + (q.hasEdns ? 1 : 0), 10);
  if (q.hasEdns) writeOpt(out, off, 0, q.dnssecOk);
  return out;
}
