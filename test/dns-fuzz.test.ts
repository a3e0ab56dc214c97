// Fuzz over real sockets: 100,000+ random and mutated packets by UDP and a
// few thousand by TCP (with bad length prefixes), then a normal query must
// still be answered. Malformed queries get FORMERR or are dropped; nothing
// crashes. The seed is printed so a failure can be replayed.
import test from 'ava';
import { fuzzRandom } from './helpers/fuzz.ts';
import dgram from 'node:dgram';
import net from 'node:net';
import { TestDnsServer, startTestCache, buildQuery } from './helpers/dns-server.ts';

const UDP_PACKETS = 100_000;
const TCP_PACKETS = 3_000;

test('100,000 random and mutated packets over UDP and TCP do not break the cache', async (t) => {
  const { int } = fuzzRandom(t);
  const up = await TestDnsServer.start({ zone: 'cluster.local', records: { 'ok.default.svc.cluster.local': [{ type: 'A', data: '10.96.9.9', ttl: 60 }] } });
  // "." goes to the test upstream too, so mutated names that still parse
  // are forwarded somewhere real (it refuses names outside its zone).
  const cache = await startTestCache(['--zone', `cluster.local=${up.address}`, '--zone', `.=${up.address}`]);
  const seeds = [
    buildQuery('ok.default.svc.cluster.local', 'A'),
    buildQuery('a.b.c.d.e.f.cluster.local', 'AAAA', { edns: 1232 }),
    buildQuery('x.example', 'TXT', { edns: 4096, dnssecOk: true }),
    buildQuery('10.in-addr.arpa', 'PTR'),
  ];
  const mutateOne = (): Buffer => {
    const kind = int(10);
    if (kind === 0) {
      // Pure noise of any size, sometimes huge.
      const size = int(8) === 0 ? 1000 + int(60_000) : int(600);
      const b = Buffer.allocUnsafe(size);
      for (let i = 0; i < size; i++) b[i] = int(256);
      return b;
    }
    const b = Buffer.from(seeds[int(seeds.length)]);
    switch (kind) {
      case 1: return b.subarray(0, int(b.length)); // truncated
      case 2: b.writeUInt16BE(int(65536), 4 + 2 * int(4)); return b; // wrong counts
      case 3: { const at = 12 + int(b.length - 12); b[at] = 0xc0; if (at + 1 < b.length) b[at + 1] = int(2) ? at : int(256); return b; } // pointers and loops
      case 4: b[12 + int(b.length - 12)] = 0x3f + int(0xc0); return b; // huge / reserved labels
      case 5: return Buffer.concat([b, Buffer.alloc(int(2000), int(256))]); // trailing junk
      case 6: b[2] = int(256); b[3] = int(256); return b; // random flags, opcode, QR
      default: {
        const flips = 1 + int(6);
        for (let i = 0; i < flips; i++) b[int(b.length)] = int(256);
        return b;
      }
    }
  };

  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  let answers = 0;
  let badAnswers = 0;
  sock.on('message', (m) => {
    answers++;
    if (m.length < 12 || !(m[2] & 0x80)) badAnswers++;
  });
  const before = await cache.metric('kproxy_dns_cache_malformed_queries_total');
  try {
    let sent = 0;
    while (sent < UDP_PACKETS) {
      // Small bursts: one loop turn reads a few dozen datagrams.
      for (let i = 0; i < 20 && sent < UDP_PACKETS; i++, sent++) {
        const p = mutateOne();
        if (p.length <= 65_507) sock.send(p, cache.port, cache.host);
      }
      // Let the cache drain its socket between bursts.
      await new Promise((r) => setImmediate(r));
      if (sent % 2000 === 0) await new Promise((r) => setTimeout(r, 2));
    }
    t.log(`sent ${sent} UDP packets`);

    // TCP: several connections, valid framing carrying junk, then lies about length.
    let tcpSent = 0;
    for (let c = 0; c < 10; c++) {
      const conn = net.connect({ host: cache.host, port: cache.port });
      conn.on('error', () => undefined);
      conn.on('data', () => undefined);
      await new Promise<void>((r) => conn.once('connect', () => r()));
      for (let i = 0; i < TCP_PACKETS / 10; i++, tcpSent++) {
        const p = mutateOne().subarray(0, 65535);
        const head = Buffer.alloc(2);
        head.writeUInt16BE(p.length);
        conn.write(Buffer.concat([head, p]));
      }
      const lie = Buffer.alloc(2);
      lie.writeUInt16BE(60_000);
      conn.end(Buffer.concat([lie, Buffer.from('short')]));
    }
    t.log(`sent ${tcpSent} TCP messages`);
    await new Promise((r) => setTimeout(r, 500));

    const after = await cache.metric('kproxy_dns_cache_malformed_queries_total');
    t.log(`${answers} UDP answers, ${after - before} malformed queries counted`);
    t.true(after - before > UDP_PACKETS / 4, 'most malformed packets reached the cache and were judged');
    t.true(answers > 0);
    t.is(badAnswers, 0, 'every answer is a well-formed response header');
    // Still alive and correct, over UDP and TCP.
    const r = await cache.ask('ok.default.svc.cluster.local', 'A');
    t.deepEqual(r.packet.answers?.map((x) => x.data), ['10.96.9.9']);
    const rt = await cache.ask('ok.default.svc.cluster.local', 'A', { tcp: true });
    t.deepEqual(rt.packet.answers?.map((x) => x.data), ['10.96.9.9']);
    t.is((await fetch(`http://${cache.http.health}/health`)).status, 200);
  } finally {
    sock.close();
    await cache.stop();
    await up.stop();
  }
});
