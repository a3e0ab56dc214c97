// Upstreams that die or go silent: stale answers while every upstream
// fails, SERVFAIL within the zone's timeout when nothing is cached, and
// failover to the zone's other upstreams.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDnsServer, startTestCache, type TestCache } from './helpers/dns-server.ts';

const dir = mkdtempSync(join(tmpdir(), 'kproxy-dns-faults-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function configFile(name: string, yaml: string): string {
  const p = join(dir, name);
  writeFileSync(p, yaml);
  return p;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('serve-stale: after the only upstream is killed, expired answers come back with the stale TTL', async (t) => {
  const up = await TestDnsServer.start({
    zone: 'cluster.local', records: { 'db.default.svc.cluster.local': [{ type: 'A', data: '10.96.1.1', ttl: 1 }] },
  });
  const cfg = configFile('stale.yaml', `
listen: [127.0.0.1:0]
zones:
  - suffix: cluster.local
    upstreams: [${up.address}]
    timeout_ms: 400
    max_fails: 1
    cache: { serve_stale: 60, stale_ttl: 7 }
`);
  const cache = await startTestCache(['--config', cfg]);
  try {
    const fresh = await cache.ask('db.default.svc.cluster.local', 'A');
    t.is(fresh.packet.answers?.[0]?.ttl, 1);
    await up.stop();
    await sleep(1200);
    const stale = await cache.ask('db.default.svc.cluster.local', 'A');
    t.is(stale.packet.rcode, 'NOERROR');
    t.deepEqual(stale.packet.answers?.map((a) => a.data), ['10.96.1.1']);
    t.is(stale.packet.answers?.[0]?.ttl, 7);
    t.true(stale.ms < 1000, `stale answer took ${stale.ms} ms`);
    // Now the upstream is known down: stale answers come without waiting.
    const again = await cache.ask('db.default.svc.cluster.local', 'A');
    t.is(again.packet.answers?.[0]?.ttl, 7);
    t.true(again.ms < 100, `second stale answer took ${again.ms} ms`);
    t.true(await cache.metric('coredns_cache_served_stale_total') >= 2);
    // A name never cached gets SERVFAIL within the timeout.
    const none = await cache.ask('never.default.svc.cluster.local', 'A');
    t.is(none.packet.rcode, 'SERVFAIL');
  } finally {
    await cache.stop();
  }
});

test('a silent upstream: SERVFAIL within the configured timeout, not later', async (t) => {
  const up = await TestDnsServer.start({ zone: 'cluster.local' });
  up.silent = true;
  const cfg = configFile('silent.yaml', `
listen: [127.0.0.1:0]
zones:
  - suffix: cluster.local
    upstreams: [${up.address}]
    timeout_ms: 500
`);
  const cache = await startTestCache(['--config', cfg]);
  try {
    const r = await cache.ask('x.default.svc.cluster.local', 'A', { timeoutMs: 3000 });
    t.is(r.packet.rcode, 'SERVFAIL');
    t.true(r.ms >= 450 && r.ms < 800, `SERVFAIL after ${r.ms.toFixed(0)} ms, want about 500`);
    const tcp = await cache.ask('y.default.svc.cluster.local', 'A', { tcp: true, timeoutMs: 3000 });
    t.is(tcp.packet.rcode, 'SERVFAIL');
    t.true(tcp.ms < 800);
    t.true(up.count('x.default.svc.cluster.local') >= 1, 'the query did reach the silent upstream');
  } finally {
    await cache.stop();
    await up.stop();
  }
});

test('failover: a dead first upstream is skipped after max_fails, health-checked, and taken back when it returns', async (t) => {
  const records = { 'api.default.svc.cluster.local': [{ type: 'A', data: '10.96.2.2', ttl: 0 }] };
  const dead = await TestDnsServer.start({ zone: 'cluster.local', records });
  const live = await TestDnsServer.start({ zone: 'cluster.local', records });
  dead.silent = true;
  const cfg = configFile('failover.yaml', `
listen: [127.0.0.1:0]
zones:
  - suffix: cluster.local
    upstreams: [${dead.address}, ${live.address}]
    policy: sequential
    max_fails: 2
    health_check_ms: 100
    timeout_ms: 1000
`);
  const cache = await startTestCache(['--config', cfg]);
  try {
    // TTL 0: nothing is cached, every query goes upstream.
    const first = await cache.ask('api.default.svc.cluster.local', 'A', { timeoutMs: 3000 });
    t.deepEqual(first.packet.answers?.map((a) => a.data), ['10.96.2.2']);
    t.true(first.ms >= 450, 'the first query waited for the dead upstream');
    await cache.ask('api.default.svc.cluster.local', 'A', { timeoutMs: 3000 });
    // Two failures: the dead upstream is down, the live one answers at once.
    const fast = await cache.ask('api.default.svc.cluster.local', 'A', { timeoutMs: 3000 });
    t.deepEqual(fast.packet.answers?.map((a) => a.data), ['10.96.2.2']);
    t.true(fast.ms < 300, `after failover the answer took ${fast.ms.toFixed(0)} ms`);
    await sleep(350);
    t.true(await cache.metric('coredns_forward_healthcheck_failures_total', { to: dead.address }) >= 1);
    t.is(await cache.metric('kproxy_dns_cache_upstream_healthy', { to: dead.address }), 0);
    // It comes back: the health check sees it and sequential order uses it again.
    dead.silent = false;
    await sleep(400);
    t.is(await cache.metric('kproxy_dns_cache_upstream_healthy', { to: dead.address }), 1);
    const before = dead.count('api.default.svc.cluster.local');
    await cache.ask('api.default.svc.cluster.local', 'A');
    t.is(dead.count('api.default.svc.cluster.local'), before + 1);
  } finally {
    await cache.stop();
    await dead.stop();
    await live.stop();
  }
});

test('round robin spreads queries over healthy upstreams; force_tcp uses TCP only', async (t) => {
  const records = { 'rr.default.svc.cluster.local': [{ type: 'A', data: '10.96.3.3', ttl: 0 }] };
  const one = await TestDnsServer.start({ zone: 'cluster.local', records });
  const two = await TestDnsServer.start({ zone: 'cluster.local', records });
  const cfg = configFile('rr.yaml', `
listen: [127.0.0.1:0]
zones:
  - suffix: cluster.local
    upstreams: [${one.address}, ${two.address}]
    policy: round_robin
    transport: force_tcp
`);
  const cache = await startTestCache(['--config', cfg]);
  try {
    for (let i = 0; i < 10; i++) await cache.ask('rr.default.svc.cluster.local', 'A');
    t.is(one.count('rr.default.svc.cluster.local'), 5);
    t.is(two.count('rr.default.svc.cluster.local'), 5);
    t.is(one.udpQueries + two.udpQueries, 0);
    t.is(one.tcpQueries + two.tcpQueries, 10);
  } finally {
    await cache.stop();
    await one.stop();
    await two.stop();
  }
});

test('prefetch: a popular name is refreshed before it expires, so it never misses', async (t) => {
  const up = await TestDnsServer.start({
    zone: 'cluster.local', records: { 'hot.default.svc.cluster.local': [{ type: 'A', data: '10.96.4.4', ttl: 2 }] },
  });
  const cfg = configFile('prefetch.yaml', `
listen: [127.0.0.1:0]
zones:
  - suffix: cluster.local
    upstreams: [${up.address}]
    cache: { prefetch: 2, prefetch_percentage: 50 }
`);
  const cache = await startTestCache(['--config', cfg]);
  try {
    const before = await cache.metric('coredns_cache_misses_total');
    for (let i = 0; i < 30; i++) {
      const r = await cache.ask('hot.default.svc.cluster.local', 'A');
      t.is(r.packet.rcode, 'NOERROR');
      await sleep(100);
    }
    // 3 s of queries over a 2 s TTL: refreshed in the background, one miss only.
    t.is(await cache.metric('coredns_cache_misses_total') - before, 1);
    t.true(up.count('hot.default.svc.cluster.local') >= 2);
    t.true(await cache.metric('coredns_cache_prefetch_total') >= 1);
  } finally {
    await cache.stop();
    await up.stop();
  }
});

test('each zone has its own capacity: a full zone evicts its oldest entry, other zones keep theirs', async (t) => {
  const records: Record<string, Array<{ type: string; data: string; ttl: number }>> = {};
  for (const n of ['one', 'two', 'three']) records[`${n}.cluster.local`] = [{ type: 'A', data: '10.96.8.8', ttl: 60 }];
  for (const n of ['one', 'two', 'three']) records[`${n}.cluster-b.local`] = [{ type: 'A', data: '10.200.8.8', ttl: 60 }];
  const up = await TestDnsServer.start({ zone: ['cluster.local', 'cluster-b.local'], records });
  const cfg = configFile('capacity.yaml', `
zones:
  - suffix: cluster.local
    upstreams: [${up.address}]
    cache: { capacity: 2 }
  - suffix: cluster-b.local
    upstreams: [${up.address}]
`);
  const cache = await startTestCache(['--config', cfg, '--listen', '[::1]:0']);
  try {
    t.is(cache.host, '::1', 'served over IPv6');
    for (const n of ['one', 'two', 'three']) {
      await cache.ask(`${n}.cluster.local`, 'A');
      await cache.ask(`${n}.cluster-b.local`, 'A');
    }
    t.is(await cache.metric('coredns_cache_entries', { zones: 'cluster.local.' }), 2);
    t.is(await cache.metric('coredns_cache_entries', { zones: 'cluster-b.local.' }), 3);
    await cache.ask('three.cluster.local', 'A');
    await cache.ask('one.cluster-b.local', 'A');
    t.is(up.count('three.cluster.local'), 1, 'newest entry still cached');
    t.is(up.count('one.cluster-b.local'), 1, 'the other zone kept its oldest entry');
    await cache.ask('one.cluster.local', 'A');
    t.is(up.count('one.cluster.local'), 2, 'the oldest entry of the full zone was evicted');
  } finally {
    await cache.stop();
    await up.stop();
  }
});
