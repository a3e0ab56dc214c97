// The cache with real DNS traffic: two authoritative servers stand in for
// cluster A's and cluster B's kube-dns; queries go over real UDP and TCP.
import test from 'ava';
import { TestDnsServer, startTestCache, rawUdp, buildQuery, type Decoded, type TestCache } from './helpers/dns-server.ts';

let a: TestDnsServer;
let b: TestDnsServer;
let cache: TestCache;

const bigTxt = Array.from({ length: 12 }, (_, i) => `${i}`.padEnd(250, 'x'));

test.before(async () => {
  a = await TestDnsServer.start({
    zone: ['cluster.local', 'in-addr.arpa'], soaMinimum: 2,
    records: {
      'web.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.20', ttl: 60 }],
      'hit.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.21', ttl: 60 }],
      'case.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.22', ttl: 60 }],
      'ttl.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.23', ttl: 20 }],
      'long.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.24', ttl: 3000 }],
      'crowd.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.25', ttl: 60 }],
      'big.default.svc.cluster.local': [{ type: 'TXT', data: bigTxt, ttl: 60 }],
      'edns.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.26', ttl: 60 }],
      'only-a.default.svc.cluster.local': [{ type: 'A', data: '10.96.0.27', ttl: 60 }],
      '20.0.96.10.in-addr.arpa': [{ type: 'PTR', data: 'web.default.svc.cluster.local', ttl: 60 }],
    },
  });
  b = await TestDnsServer.start({
    zone: 'cluster-b.local',
    records: { 'web.default.svc.cluster-b.local': [{ type: 'A', data: '10.200.0.20', ttl: 60 }] },
  });
  cache = await startTestCache([
    '--zone', `cluster.local=${a.address}`,
    '--zone', `cluster-b.local=${b.address}`,
    '--zone', `in-addr.arpa=${a.address}`,
  ]);
});

test.after.always(async () => {
  await cache?.stop();
  await a?.stop();
  await b?.stop();
});

function addr(p: Decoded): unknown[] {
  return (p.answers ?? []).map((x) => x.data);
}

test('routes by the longest suffix: cluster.local to A, cluster-b.local to B, reverse names to A', async (t) => {
  const ra = await cache.ask('web.default.svc.cluster.local', 'A');
  const rb = await cache.ask('web.default.svc.cluster-b.local', 'A');
  const rp = await cache.ask('20.0.96.10.in-addr.arpa', 'PTR');
  t.deepEqual(addr(ra.packet), ['10.96.0.20']);
  t.deepEqual(addr(rb.packet), ['10.200.0.20']);
  t.deepEqual(addr(rp.packet), ['web.default.svc.cluster.local']);
  t.is(a.count('web.default.svc.cluster.local'), 1);
  t.is(b.count('web.default.svc.cluster-b.local'), 1);
  t.is(b.count('web.default.svc.cluster.local'), 0);
  t.is(a.count('20.0.96.10.in-addr.arpa'), 1);
});

test('names outside every zone are refused (no "." zone configured)', async (t) => {
  const r = await cache.ask('example.com', 'A');
  t.is(r.packet.rcode, 'REFUSED');
});

test.serial('a cache hit does not reach the upstream, over UDP or TCP', async (t) => {
  const before = await cache.metric('coredns_cache_hits_total', { zones: 'cluster.local.' });
  const first = await cache.ask('hit.default.svc.cluster.local', 'A');
  const second = await cache.ask('hit.default.svc.cluster.local', 'A');
  const third = await cache.ask('hit.default.svc.cluster.local', 'A', { tcp: true });
  for (const r of [first, second, third]) t.deepEqual(addr(r.packet), ['10.96.0.21']);
  t.is(a.count('hit.default.svc.cluster.local', 'A'), 1);
  t.is(await cache.metric('coredns_cache_hits_total', { zones: 'cluster.local.' }) - before, 2);
});

test('the query ID and the question are echoed exactly, whatever case the cached answer had', async (t) => {
  const q1 = buildQuery('Case.Default.SVC.cluster.local', 'A', { id: 4242 });
  const q2 = buildQuery('cASE.dEFAULT.svc.CLUSTER.LOCAL', 'A', { id: 777 });
  const r1 = await rawUdp(cache.host, cache.port, q1);
  const r2 = await rawUdp(cache.host, cache.port, q2);
  if (!r1 || !r2) return t.fail('no answer');
  t.is(r1.readUInt16BE(0), 4242);
  t.is(r2.readUInt16BE(0), 777);
  const qlen = q1.length - 12;
  t.deepEqual(r1.subarray(12, 12 + qlen), q1.subarray(12, 12 + qlen));
  t.deepEqual(r2.subarray(12, 12 + qlen), q2.subarray(12, 12 + qlen));
  t.is(a.count('case.default.svc.cluster.local'), 1);
});

test('NXDOMAIN and NODATA are cached; the SOA minimum bounds the negative TTL (RFC 2308)', async (t) => {
  const nx1 = await cache.ask('missing.default.svc.cluster.local', 'A');
  const nx2 = await cache.ask('missing.default.svc.cluster.local', 'A');
  t.is(nx1.packet.rcode, 'NXDOMAIN');
  t.is(nx2.packet.rcode, 'NXDOMAIN');
  t.is(a.count('missing.default.svc.cluster.local'), 1);
  const soaTtl = nx1.packet.authorities?.[0]?.ttl ?? -1;
  t.true(soaTtl > 0 && soaTtl <= 2, `negative TTL ${soaTtl} must be <= SOA minimum 2`);
  const nd1 = await cache.ask('only-a.default.svc.cluster.local', 'AAAA');
  await cache.ask('only-a.default.svc.cluster.local', 'AAAA');
  t.is(nd1.packet.rcode, 'NOERROR');
  t.is(nd1.packet.answers?.length, 0);
  t.is(a.count('only-a.default.svc.cluster.local', 'AAAA'), 1);
  // After the negative TTL the denial is asked again.
  await new Promise((r) => setTimeout(r, 2300));
  await cache.ask('missing.default.svc.cluster.local', 'A');
  t.is(a.count('missing.default.svc.cluster.local'), 2);
});

test('TTLs count down in answers from the cache and are capped at 30 s', async (t) => {
  const first = await cache.ask('ttl.default.svc.cluster.local', 'A');
  t.is(first.packet.answers?.[0]?.ttl, 20);
  const long = await cache.ask('long.default.svc.cluster.local', 'A');
  t.is(long.packet.answers?.[0]?.ttl, 30);
  await new Promise((r) => setTimeout(r, 2100));
  const later = await cache.ask('ttl.default.svc.cluster.local', 'A');
  const ttl = later.packet.answers?.[0]?.ttl ?? -1;
  t.true(ttl >= 17 && ttl <= 18, `TTL after 2.1 s was ${ttl}`);
  t.is(a.count('ttl.default.svc.cluster.local'), 1);
});

test('100 identical concurrent queries cause one upstream query', async (t) => {
  a.delayMs = 150;
  try {
    const all = await Promise.all(Array.from({ length: 100 }, (_, i) =>
      cache.ask('crowd.default.svc.cluster.local', 'A', { id: i, tcp: i % 10 === 0 })));
    t.is(all.filter((r) => addr(r.packet)[0] === '10.96.0.25').length, 100);
    t.true(all.every((r, i) => r.packet.id === i));
  } finally {
    a.delayMs = 0;
  }
  t.is(a.count('crowd.default.svc.cluster.local'), 1);
});

test('a truncated UDP answer from the upstream is fetched again over TCP; clients get what fits', async (t) => {
  const tcpBefore = a.tcpQueries;
  const big = await cache.ask('big.default.svc.cluster.local', 'TXT', { edns: 4096 });
  t.false(Boolean(big.packet.flag_tc));
  t.is(big.packet.answers?.length, 1);
  t.true(big.raw.length > 1232);
  t.is(a.tcpQueries - tcpBefore, 1);
  // Without EDNS only 512 bytes fit: a proper TC answer with the question.
  const small = await cache.ask('big.default.svc.cluster.local', 'TXT');
  t.true(Boolean(small.packet.flag_tc));
  t.true(small.raw.length <= 512);
  t.is(small.packet.questions?.[0]?.name, 'big.default.svc.cluster.local');
  t.is(small.packet.answers?.length, 0);
  // Over TCP the full answer comes from the cache.
  const viaTcp = await cache.ask('big.default.svc.cluster.local', 'TXT', { tcp: true });
  t.is(viaTcp.packet.answers?.length, 1);
  t.is(a.count('big.default.svc.cluster.local'), 2, 'one UDP (truncated) and one TCP query upstream');
});

test('EDNS0 is kept for clients that use it and left out for those that do not', async (t) => {
  const withEdns = await cache.ask('edns.default.svc.cluster.local', 'A', { edns: 1232 });
  const without = await cache.ask('edns.default.svc.cluster.local', 'A');
  t.true((withEdns.packet.additionals ?? []).some((x) => x.type === 'OPT'));
  t.false((without.packet.additionals ?? []).some((x) => x.type === 'OPT'));
  t.deepEqual(addr(without.packet), ['10.96.0.26']);
  t.is(a.count('edns.default.svc.cluster.local'), 1);
});

test('/health answers OK and /metrics uses CoreDNS names', async (t) => {
  const health = await fetch(`http://${cache.http.health}/health`);
  t.is(health.status, 200);
  await cache.ask('web.default.svc.cluster.local', 'A');
  const text = await (await fetch(`http://${cache.http.metrics}/metrics`)).text();
  for (const name of ['coredns_cache_hits_total', 'coredns_cache_misses_total', 'coredns_forward_requests_total',
    'coredns_dns_request_duration_seconds_bucket', 'coredns_cache_entries', 'coredns_dns_requests_total']) {
    t.true(text.includes(name), `${name} missing from /metrics`);
  }
  t.true(await cache.metric('coredns_cache_entries') > 0);
});

test('it answers only on its listen address, not on other addresses of the host', async (t) => {
  const q = buildQuery('web.default.svc.cluster.local', 'A');
  t.truthy(await rawUdp(cache.host, cache.port, q), 'answers on its listen address');
  t.is(await rawUdp('127.0.0.3', cache.port, q, 500), undefined, 'no answer on 127.0.0.3 at the same port');
});
