// The batched UDP socket against real clients: many clients in one batch
// each get their own answer, answers that come later (misses) find their
// client, oversize datagrams are dropped, IPv6 works, and the dgram
// fallback still serves.
import test from 'ava';
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { nativeModule } from '../dns-cache/native.ts';
import { TestDnsServer, startTestCache, buildQuery, rawUdp, type TestCache } from './helpers/dns-server.ts';

let up: TestDnsServer;
let cache: TestCache;

test.before(async () => {
  up = await TestDnsServer.start({ zone: 'cluster.local', wildcard: { type: 'A', data: '10.96.0.9', ttl: 300 } });
  cache = await startTestCache(['--zone', `cluster.local=${up.address}`]);
});

test.after.always(async () => {
  await cache?.stop();
  await up?.stop();
});

test('the native batch socket is built and serving (not the dgram fallback)', (t) => {
  const native = nativeModule();
  t.false(native instanceof Error, native instanceof Error ? `${native.message}: install g++, make and python3, then npm ci` : '');
  t.is(cache.udpIo, 'batched');
});

/** Sends `n` queries from each of `clients` sockets at once; returns answers by client. */
async function burst(host: string, port: number, clients: number, n: number, name: (c: number, i: number) => string): Promise<Map<number, Map<number, dnsPacket.Packet>>> {
  const got = new Map<number, Map<number, dnsPacket.Packet>>();
  const socks = await Promise.all(Array.from({ length: clients }, (_, c) => new Promise<dgram.Socket>((resolve) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const mine = new Map<number, dnsPacket.Packet>();
    got.set(c, mine);
    s.on('message', (m) => { const p = dnsPacket.decode(m); mine.set(p.id ?? -1, p); });
    s.bind(0, host, () => resolve(s));
  })));
  for (let i = 0; i < n; i++) {
    socks.forEach((s, c) => s.send(buildQuery(name(c, i), 'A', { id: c * 1000 + i }), port, host));
  }
  const want = clients * n;
  const until = Date.now() + 5000;
  while ([...got.values()].reduce((a, m) => a + m.size, 0) < want && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  for (const s of socks) s.close();
  return got;
}

function checkAnswers(t: import('ava').ExecutionContext, got: Map<number, Map<number, dnsPacket.Packet>>, clients: number, n: number, name: (c: number, i: number) => string): void {
  let wrong = 0;
  let missing = 0;
  for (let c = 0; c < clients; c++) {
    for (let i = 0; i < n; i++) {
      const p = got.get(c)?.get(c * 1000 + i);
      if (!p) missing++;
      else if (p.questions?.[0]?.name !== name(c, i) || (p.answers?.[0] as { data?: unknown } | undefined)?.data !== '10.96.0.9') wrong++;
    }
  }
  t.is(missing, 0, 'every query answered');
  t.is(wrong, 0, 'every answer went to the client that asked, with its own question');
}

test.serial('cache hits from 20 clients at once: each client gets its own answers', async (t) => {
  const name = (c: number, i: number): string => `hit${(c * 7 + i) % 10}.default.svc.cluster.local`;
  for (let k = 0; k < 10; k++) await cache.ask(`hit${k}.default.svc.cluster.local`, 'A');
  const before = up.udpQueries + up.tcpQueries;
  const got = await burst(cache.host, cache.port, 20, 40, name);
  checkAnswers(t, got, 20, 40, name);
  t.is(up.udpQueries + up.tcpQueries, before, 'all 800 were cache hits');
});

test.serial('misses answered later reach the client that asked, past the batch they arrived in', async (t) => {
  up.delayMs = 30;
  const name = (c: number, i: number): string => `miss${c}-${i}.default.svc.cluster.local`;
  const got = await burst(cache.host, cache.port, 10, 20, name);
  up.delayMs = 0;
  checkAnswers(t, got, 10, 20, name);
});

test.serial('a datagram longer than any query is dropped and counted; the next query answers', async (t) => {
  const before = await cache.metric('kproxy_dns_cache_malformed_queries_total', { action: 'drop' });
  const big = Buffer.alloc(6000);
  buildQuery('big.default.svc.cluster.local', 'A').copy(big);
  t.is(await rawUdp(cache.host, cache.port, big, 300), undefined);
  t.is(await cache.metric('kproxy_dns_cache_malformed_queries_total', { action: 'drop' }) - before, 1);
  const r = await cache.ask('after.default.svc.cluster.local', 'A');
  t.is(r.packet.rcode, 'NOERROR');
});

test.serial('hits, misses and oversize datagrams mixed in one batch: every answer reaches the client that asked', async (t) => {
  // Hits are queued in the batch's turn in their own order while misses
  // and dropped datagrams leave gaps: the answer queued k-th must still go
  // to the sender of its own datagram, not of the k-th one.
  for (let k = 0; k < 4; k++) await cache.ask(`mix${k}.default.svc.cluster.local`, 'A');
  up.delayMs = 20;
  const name = (c: number, i: number): string => (i % 2 === 0 ? `mix${(c + i) % 4}.default.svc.cluster.local` : `mixmiss${c}-${i}.default.svc.cluster.local`);
  const junk = dgram.createSocket('udp4');
  const big = Buffer.alloc(5000);
  for (let k = 0; k < 20; k++) junk.send(big, cache.port, cache.host);
  const got = await burst(cache.host, cache.port, 12, 30, name);
  junk.close();
  up.delayMs = 0;
  checkAnswers(t, got, 12, 30, name);
});

test('IPv6 listen address', async (t) => {
  const v6 = await startTestCache(['--listen', '[::1]:0', '--zone', `cluster.local=${up.address}`]);
  try {
    t.is(v6.udpIo, 'batched');
    const r = await v6.ask('six.default.svc.cluster.local', 'A');
    t.is(r.packet.rcode, 'NOERROR');
    const name = (c: number, i: number): string => `six${i % 3}.default.svc.cluster.local`;
    checkAnswers(t, await burst('::1', v6.port, 5, 20, name), 5, 20, name);
  } finally {
    await v6.stop();
  }
});

test('udp_io: dgram serves through Node\'s dgram sockets', async (t) => {
  const d = await startTestCache(['--udp-io', 'dgram', '--zone', `cluster.local=${up.address}`]);
  try {
    t.is(d.udpIo, 'dgram');
    const name = (c: number, i: number): string => `dg${i % 4}.default.svc.cluster.local`;
    checkAnswers(t, await burst(d.host, d.port, 5, 20, name), 5, 20, name);
  } finally {
    await d.stop();
  }
});

test('two batched sockets on one address with --udp-sockets 2 both answer; stop frees the port', async (t) => {
  const two = await startTestCache(['--udp-sockets', '2', '--zone', `cluster.local=${up.address}`]);
  const { port } = two;
  const name = (c: number, i: number): string => `two${i % 5}.default.svc.cluster.local`;
  checkAnswers(t, await burst(two.host, port, 16, 10, name), 16, 10, name);
  await two.stop();
  const again = await startTestCache(['--listen', `127.0.0.1:${port}`, '--zone', `cluster.local=${up.address}`]);
  try {
    t.is((await again.ask('back.default.svc.cluster.local', 'A')).packet.rcode, 'NOERROR');
  } finally {
    await again.stop();
  }
});

test('an unknown udp_io is refused with the allowed values', async (t) => {
  const e = await t.throwsAsync(startTestCache(['--udp-io', 'mmap', '--zone', `cluster.local=${up.address}`]));
  t.regex(e?.message ?? '', /udp_io.*"mmap": want one of batched, dgram/);
});
