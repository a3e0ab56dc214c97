// Table-driven tests of the hand-written wire code against dns-packet's encoder.
import test from 'ava';
import dnsPacket from 'dns-packet';
import { renderAnswer, storeAnswer } from '../dns-cache/answer.ts';
import {
  analyzeResponse, isRejection, parseQuery, queryKey, keyHash, RCODE_BADVERS, RCODE_FORMERR, RCODE_NOTIMP, type Query,
} from '../dns-cache/wire.ts';
import { ZoneTable, wireName, dottedName } from '../dns-cache/zones.ts';

function query(name: string, type = 'A', extra: Partial<dnsPacket.Packet> = {}): Buffer {
  return dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: 'IN' } as dnsPacket.Question], ...extra } as dnsPacket.Packet);
}
const opt = (size: number, flags = 0): dnsPacket.Answer => ({ name: '.', type: 'OPT', udpPayloadSize: size, flags } as dnsPacket.Answer);

function mutate(buf: Buffer, f: (b: Buffer) => void): Buffer {
  const c = Buffer.from(buf);
  f(c);
  return c;
}

const good = query('web.default.svc.cluster.local');
const rejections: Array<[string, Buffer, number | 'drop']> = [
  ['shorter than a header', good.subarray(0, 11), 'drop'],
  ['a response', mutate(good, (b) => { b[2] |= 0x80; }), 'drop'],
  ['opcode STATUS', mutate(good, (b) => { b[2] = (b[2] & 0x87) | (2 << 3); }), RCODE_NOTIMP],
  ['QDCOUNT 2', mutate(good, (b) => b.writeUInt16BE(2, 4)), RCODE_FORMERR],
  ['QDCOUNT 0', mutate(good, (b) => b.writeUInt16BE(0, 4)), RCODE_FORMERR],
  ['ANCOUNT 1', mutate(good, (b) => b.writeUInt16BE(1, 6)), RCODE_FORMERR],
  ['ARCOUNT 1 with no record', mutate(good, (b) => b.writeUInt16BE(1, 10)), RCODE_FORMERR],
  ['pointer in the question', mutate(good, (b) => { b[12] = 0xc0; b[13] = 12; }), RCODE_FORMERR],
  ['reserved label type', mutate(good, (b) => { b[12] = 0x40; }), RCODE_FORMERR],
  ['label past the end', good.subarray(0, 20), RCODE_FORMERR],
  ['type/class missing', good.subarray(0, good.length - 2), RCODE_FORMERR],
  ['trailing bytes', Buffer.concat([good, Buffer.from([1, 2, 3])]), RCODE_FORMERR],
  ['name longer than 255', query(Array.from({ length: 5 }, () => 'a'.repeat(60)).join('.')), RCODE_FORMERR],
  ['two OPT records', query('a.b', 'A', { additionals: [opt(1232), opt(1232)] }), RCODE_FORMERR],
  ['EDNS version 1', mutate(query('a.b', 'A', { additionals: [opt(1232)] }), (b) => { b[b.length - 5] = 1; }), RCODE_BADVERS],
  ['AXFR', query('cluster.local', 'AXFR'), RCODE_NOTIMP],
];

for (const [what, msg, want] of rejections) {
  test(`parseQuery refuses: ${what}`, (t) => {
    const r = parseQuery(msg);
    if (!isRejection(r)) return t.fail('accepted');
    if (want === 'drop') t.true(r.drop);
    else {
      t.false(r.drop);
      t.is(r.rcode, want, r.reason);
    }
  });
}

test('parseQuery: key ignores case, includes type, class, DO and CD; EDNS size read', (t) => {
  const a = parseQuery(query('Web.Default.SVC.cluster.local')) as Query;
  const b = parseQuery(query('web.default.svc.CLUSTER.LOCAL')) as Query;
  const c = parseQuery(query('web.default.svc.cluster.local', 'AAAA')) as Query;
  const d = parseQuery(query('web.default.svc.cluster.local', 'A', { additionals: [opt(4096, dnsPacket.DNSSEC_OK)] })) as Query;
  t.false(isRejection(a));
  const key = (name: string, type = 'A', extra: Partial<dnsPacket.Packet> = {}): string => queryKey(query(name, type, extra), parseQuery(query(name, type, extra)) as Query);
  const ka = key('Web.Default.SVC.cluster.local');
  const kd = key('web.default.svc.cluster.local', 'A', { additionals: [opt(4096, dnsPacket.DNSSEC_OK)] });
  t.is(ka, key('web.default.svc.CLUSTER.LOCAL'));
  t.not(ka, key('web.default.svc.cluster.local', 'AAAA'));
  t.not(ka, kd);
  // The hash parsing gives is the hash of the key.
  for (const [q, k] of [[a, ka], [b, ka], [d, kd]] as const) t.is(q.hash, keyHash(k));
  t.not(a.hash, c.hash);
  t.not(a.hash, d.hash);
  t.true(d.hasEdns && d.dnssecOk);
  t.is(d.udpSize, 4096);
  t.false(a.hasEdns);
  t.is(a.udpSize, 512);
  t.is(a.id, 0x1234);
  t.is(dottedName(ka.slice(0, a.nameLen)), 'web.default.svc.cluster.local.');
});

test('zones: the longest suffix wins, "." catches the rest, labels must match whole', (t) => {
  const table = new ZoneTable([
    { suffix: 'cluster.local', zone: 'A' }, { suffix: 'b.cluster.local', zone: 'B' }, { suffix: '.', zone: 'root' },
  ]);
  const route = (n: string): string | undefined => { const w = wireName(n); return table.route(w, w.length); };
  t.is(route('x.b.cluster.local'), 'B');
  t.is(route('x.ab.cluster.local'), 'A');
  t.is(route('cluster.local'), 'A');
  t.is(route('example.com'), 'root');
  t.is(new ZoneTable([{ suffix: 'cluster.local', zone: 'A' }]).route(wireName('local'), wireName('local').length), undefined);
});

function response(name: string, answers: dnsPacket.Answer[], authorities: dnsPacket.Answer[] = [], rcode = 0, withOpt = true): Buffer {
  return dnsPacket.encode({
    type: 'response', id: 1, flags: dnsPacket.RECURSION_DESIRED | rcode,
    questions: [{ name, type: 'A', class: 'IN' } as dnsPacket.Question],
    answers, authorities, additionals: withOpt ? [opt(1232)] : [],
  } as dnsPacket.Packet);
}
const qbytes = (msg: Buffer): Buffer => msg.subarray(12, 12 + wireName('a.example').length + 4);

test('analyzeResponse finds every TTL, the OPT and the SOA minimum', (t) => {
  const msg = response('a.example', [
    { name: 'a.example', type: 'CNAME', ttl: 100, data: 'b.example' } as dnsPacket.Answer,
    { name: 'b.example', type: 'A', ttl: 50, data: '192.0.2.1' } as dnsPacket.Answer,
  ]);
  const info = analyzeResponse(msg, qbytes(msg));
  if (!info) return t.fail('rejected');
  t.deepEqual(info.ttlOffsets.map((o) => msg.readUInt32BE(o)), [100, 50]);
  t.true(info.optStart > 0 && info.optEnd === msg.length);
  const nx = response('a.example', [], [{ name: 'example', type: 'SOA', ttl: 900, data: { mname: 'ns.example', rname: 'h.example', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 3 } } as dnsPacket.Answer], 3);
  const nxInfo = analyzeResponse(nx, qbytes(nx));
  t.is(nxInfo?.soaMinimum, 3);
  t.is(nxInfo?.rcode, 3);
});

test('analyzeResponse rejects forward pointers (loops), wrong questions and overruns', (t) => {
  const msg = response('a.example', [{ name: 'a.example', type: 'A', ttl: 5, data: '192.0.2.1' } as dnsPacket.Answer], [], 0, false);
  const qEnd = 12 + wireName('a.example').length + 4;
  t.truthy(analyzeResponse(msg, qbytes(msg)));
  const loop = Buffer.from(msg);
  loop[qEnd] = 0xc0; loop[qEnd + 1] = qEnd; // points at itself
  t.is(analyzeResponse(loop, qbytes(msg)), undefined);
  t.is(analyzeResponse(msg.subarray(0, msg.length - 2), qbytes(msg)), undefined);
  const other = response('b.example', []);
  t.is(analyzeResponse(other, qbytes(msg)), undefined);
  // The name may come back in another case; qtype and qclass must match exactly
  // (0x0041 and 0x0061 differ only in the bit that makes a letter lower case).
  const upper = Buffer.from(msg);
  upper[13] = 0x41;
  t.truthy(analyzeResponse(upper, qbytes(msg)), 'A.example answers a.example');
  const question = Buffer.from(qbytes(msg));
  question.writeUInt16BE(0x0041, question.length - 4);
  const answer = Buffer.from(msg);
  answer.writeUInt16BE(0x0061, qEnd - 4);
  t.is(analyzeResponse(answer, question), undefined, 'qtype 0x0061 does not answer 0x0041');
});

test('renderAnswer patches ID, question case, counted-down TTLs; strips OPT for non-EDNS clients; truncates', (t) => {
  const msg = response('a.example', [{ name: 'a.example', type: 'A', ttl: 300, data: '192.0.2.1' } as dnsPacket.Answer]);
  const info = analyzeResponse(msg, qbytes(msg));
  if (!info) return t.fail('rejected');
  const stored = storeAnswer(msg, info, { successTtl: 30, denialTtl: 5, minTtl: 0 }, 1_000_000);
  t.is(stored.ttl, 30);
  const qmsg = query('A.Example');
  const q = parseQuery(qmsg) as Query;
  const out = renderAnswer(stored, qmsg, q, 512, 1_000_000 + 4_500);
  const p = dnsPacket.decode(out) as unknown as { id: number; questions: Array<{ name: string }>; answers: Array<{ ttl: number }>; additionals: unknown[] };
  t.is(p.id, 0x1234);
  t.is(p.questions[0].name, 'A.Example');
  t.is(p.answers[0].ttl, 26);
  t.is(p.additionals.length, 0);
  const stale = dnsPacket.decode(renderAnswer(stored, qmsg, q, 512, 1_000_000 + 999_000, 7)) as unknown as { answers: Array<{ ttl: number }> };
  t.is(stale.answers[0].ttl, 7);
  const truncated = renderAnswer(stored, qmsg, q, 20, 1_000_000);
  t.is(truncated[2] & 0x02, 0x02);
  t.is(truncated.readUInt16BE(6), 0);
});
