// The answer cache's index: entries found by key hash and matched against
// their own cached question bytes, so two names whose keys hash alike must
// still get their own answers, and eviction must unlink the right one.
import test from 'ava';
import dnsPacket from 'dns-packet';
import { remaining, storeAnswer } from '../dns-cache/answer.ts';
import { AnswerCache, type CacheEntry } from '../dns-cache/cache.ts';
import { analyzeResponse, keyHash, parseQuery, queryKey, type Query } from '../dns-cache/wire.ts';

const C = 'other.cluster.local';

function query(name: string, dnssecOk = false): Buffer {
  return dnsPacket.encode({
    type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }],
    additionals: dnssecOk ? [{ name: '.', type: 'OPT', udpPayloadSize: 1232, flags: dnsPacket.DNSSEC_OK }] : [],
  } as dnsPacket.Packet);
}

function parsed(name: string, dnssecOk = false): { msg: Buffer; q: Query; key: string } {
  const msg = query(name, dnssecOk);
  const q = parseQuery(msg) as Query;
  return { msg, q, key: queryKey(msg, q) };
}

function stored(name: string, ip: string, at = Date.now()) {
  const msg = dnsPacket.encode({
    type: 'response', id: 1, flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: 'A', class: 'IN' }], answers: [{ name, type: 'A', ttl: 60, data: ip }],
  } as dnsPacket.Packet);
  const q = parsed(name);
  const info = analyzeResponse(msg, msg.subarray(12, 12 + q.q.nameLen + 4));
  if (!info) throw new Error('test response did not parse');
  return storeAnswer(msg, info, { successTtl: 300, denialTtl: 30, minTtl: 0 }, at);
}

function address(e: { buf: Buffer; base: number; len: number }): string {
  const p = dnsPacket.decode(e.buf.subarray(e.base, e.base + e.len));
  return String((p.answers?.[0] as { data?: unknown } | undefined)?.data);
}

// Two names whose cache keys (A, IN, no DO/CD) have the same 32-bit hash
// in this process (the hash is seeded per process): found by trying names.
const [A, B] = ((): [string, string] => {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const name = `n${i}.cluster.local`;
    const h = parsed(name).q.hash;
    const other = seen.get(h);
    if (other !== undefined) return [other, name];
    seen.set(h, name);
  }
})();

/** What a lookup of `name` finds at `now`, and the entry. */
function lookup(cache: AnswerCache, name: string, now: number): { state: 'fresh' | 'stale' | 'miss'; entry?: CacheEntry } {
  const { msg, q } = parsed(name);
  const entry = cache.get(msg, q, now);
  if (entry === undefined) return { state: 'miss' };
  return { state: remaining(entry, now) > 0 ? 'fresh' : 'stale', entry };
}

const policy = { capacity: 10, serveStale: 0, staleTtl: 10, prefetchAmount: 0, prefetchPercentage: 10 };

test('the two test names really collide', (t) => {
  t.is(parsed(A).q.hash, parsed(B).q.hash);
  t.is(keyHash(parsed(A).key), keyHash(parsed(B).key));
  t.not(parsed(A).key, parsed(B).key);
});

test('names with the same key hash each get their own entry, in any case', (t) => {
  const cache = new AnswerCache();
  const z = cache.zone('cluster.local.', policy);
  cache.set(parsed(A).key, z, stored(A, '10.0.0.1'));
  cache.set(parsed(B).key, z, stored(B, '10.0.0.2'));
  const now = Date.now();
  for (const [name, ip] of [[A, '10.0.0.1'], [B, '10.0.0.2'], [A.toUpperCase(), '10.0.0.1']]) {
    const found = lookup(cache, name, now);
    t.is(found.state, 'fresh', name);
    if (found.entry) t.is(address(found.entry), ip, name);
  }
  t.is(lookup(cache, C, now).state, 'miss');
  t.is(cache.size, 2);
  // The key rebuilt from the entry is the query's key (refreshes use it).
  t.is(lookup(cache, B, now).entry?.key, parsed(B).key);
});

test('evicting one of two colliding entries leaves the other findable; a refresh replaces in place', (t) => {
  const cache = new AnswerCache();
  const z = cache.zone('cluster.local.', { ...policy, capacity: 2 });
  cache.set(parsed(A).key, z, stored(A, '10.0.0.1'));
  cache.set(parsed(B).key, z, stored(B, '10.0.0.2'));
  cache.set(parsed(B).key, z, stored(B, '10.0.0.3'));
  t.is(cache.size, 2);
  cache.set(parsed(C).key, z, stored(C, '10.0.0.4'));
  const now = Date.now();
  t.is(cache.size, 2);
  t.is(cache.evictions, 1);
  t.is(lookup(cache, A, now).state, 'miss', 'the oldest entry went');
  const b = lookup(cache, B, now);
  t.is(b.state, 'fresh');
  if (b.entry) t.is(address(b.entry), '10.0.0.3');
  t.truthy(cache.usable(parsed(C).key, now));
  t.is(cache.usable(parsed(A).key, now), undefined);
});

test('lookups and refresh fallbacks agree on the serve-stale window, up to its last instant', (t) => {
  const cache = new AnswerCache();
  const z = cache.zone('cluster.local.', { ...policy, serveStale: 10 });
  const t0 = 1_000_000_000_000;
  cache.set(parsed(C).key, z, stored(C, '10.0.0.4', t0));
  const { key } = parsed(C);
  const at = (s: number): number => t0 + s * 1000;
  t.is(lookup(cache, C, at(59)).state, 'fresh');
  for (const s of [60, 65, 70]) {
    t.is(lookup(cache, C, at(s)).state, 'stale', `${s} s after storing`);
    t.truthy(cache.usable(key, at(s)), `${s} s after storing`);
  }
  t.is(cache.usable(key, at(70.001)), undefined);
  t.is(lookup(cache, C, at(70.001)).state, 'miss');
  t.is(cache.size, 0, 'an entry past the window is dropped');
});

test('removing the head of a hash chain leaves the entry behind it findable', (t) => {
  const cache = new AnswerCache();
  const keep = cache.zone('a.', policy);
  const drop = cache.zone('b.', policy);
  cache.set(parsed(A).key, keep, stored(A, '10.0.0.1'));
  cache.set(parsed(B).key, drop, stored(B, '10.0.0.2')); // the newer entry heads the chain
  cache.retainZones(new Set(['a.']));
  const now = Date.now();
  t.is(cache.size, 1);
  t.is(lookup(cache, B, now).state, 'miss');
  const a = lookup(cache, A, now);
  t.is(a.state, 'fresh');
  if (a.entry) t.is(address(a.entry), '10.0.0.1');
});

test('an entry answers only queries with its own DO and CD bits', (t) => {
  const cache = new AnswerCache();
  const z = cache.zone('cluster.local.', policy);
  cache.set(parsed(C).key, z, stored(C, '10.0.0.4'));
  const plain = parsed(C);
  const withDo = parsed(C, true);
  const e = cache.get(plain.msg, plain.q, Date.now());
  t.truthy(e);
  t.true(e?.answers(plain.msg, plain.q));
  t.false(e?.answers(withDo.msg, withDo.q), 'a DO query is not answered by an entry stored without DO');
  t.is(cache.get(withDo.msg, withDo.q, Date.now()), undefined);
});

test('the table grows past its first size and every entry stays findable; eviction keeps insertion order per zone', (t) => {
  const cache = new AnswerCache();
  const a = cache.zone('a.', { ...policy, capacity: 2500 });
  const b = cache.zone('b.', { ...policy, capacity: 1000 });
  const name = (z: string, i: number): string => `n${i}.${z}.cluster.local`;
  const t0 = Date.now();
  for (let i = 0; i < 3000; i++) {
    cache.set(parsed(name('a', i)).key, a, stored(name('a', i), '10.0.0.1', t0));
    if (i % 2 === 0) cache.set(parsed(name('b', i)).key, b, stored(name('b', i), '10.0.0.2', t0));
  }
  // a: 3000 inserted into 2500 places, b: 1500 into 1000.
  t.is(cache.size, 3500);
  t.is(cache.evictions, 1000);
  const state = (n: string): string => lookup(cache, n, t0).state;
  let wrong = 0;
  for (let i = 0; i < 3000; i++) {
    if (state(name('a', i)) !== (i < 500 ? 'miss' : 'fresh')) wrong++;
    if (i % 2 === 0 && state(name('b', i)) !== (i < 1000 ? 'miss' : 'fresh')) wrong++;
  }
  t.is(wrong, 0, 'the oldest of each zone went, everything else answers');
  cache.retainZones(new Set(['b.']));
  t.is(cache.size, 1000);
  t.is(state(name('a', 2999)), 'miss');
  t.is(state(name('b', 2998)), 'fresh');
});
