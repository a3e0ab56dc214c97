// TCP limits with real sockets: one client holding many connections that
// each dribble a partial message must not take every other client's TCP
// service away; a whole message has a deadline from its first byte; one
// address has a cap; at the total cap the oldest idle connection makes room.
import test from 'ava';
import net from 'node:net';
import { TestDnsServer, buildQuery, startTestCache, type TestCache } from './helpers/dns-server.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const NAME = 'web.default.svc.cluster.local';

let up: TestDnsServer;
test.before(async () => {
  up = await TestDnsServer.start({ zone: 'cluster.local', records: { [NAME]: [{ type: 'A', data: '10.96.0.20', ttl: 60 }] } });
});
test.after.always(async () => { await up?.stop(); });

function withPrefix(msg: Buffer): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(msg.length);
  return Buffer.concat([head, msg]);
}

/** A TCP connection from `from` that tells when it is closed by the server. */
interface Conn {
  readonly sock: net.Socket;
  closed: boolean;
  readonly opened: Promise<boolean>;
  /** Complete answers received. */
  answers: number;
}

function open(cache: TestCache, from: string): Conn {
  const sock = net.connect({ host: cache.host, port: cache.port, localAddress: from });
  const c: Conn = {
    sock, closed: false, answers: 0,
    opened: new Promise((r) => { sock.once('connect', () => r(true)); sock.once('error', () => r(false)); }),
  };
  let buf = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
      buf = buf.subarray(buf.readUInt16BE(0) + 2);
      c.answers++;
    }
  });
  sock.on('error', () => undefined);
  sock.on('close', () => { c.closed = true; });
  return c;
}

/** One query on a fresh connection from `from`: the answer's rcode, or why there was none. */
async function query(cache: TestCache, from: string, timeoutMs = 2000): Promise<string> {
  const c = open(cache, from);
  try {
    if (!(await c.opened)) return 'connect failed';
    c.sock.write(withPrefix(buildQuery(NAME, 'A')));
    const until = Date.now() + timeoutMs;
    while (c.answers === 0 && !c.closed && Date.now() < until) await sleep(10);
    return c.answers > 0 ? 'answered' : c.closed ? 'closed by the server' : 'timed out';
  } finally {
    c.sock.destroy();
  }
}

test('one client dribbling partial messages on 1,100 connections does not shut out another client (default limits)', async (t) => {
  // The attack from the report, scaled in time: 1,100 connections from one
  // address, each sends a length prefix and then one byte every 500 ms
  // (each byte restarts an idle timer), reconnecting whenever closed.
  const cache = await startTestCache(['--zone', `cluster.local=${up.address}`]);
  const attacker = new Set<Conn>();
  let stop = false;
  const attack = (): void => {
    if (stop) return;
    const c = open(cache, '127.0.0.2');
    attacker.add(c);
    c.sock.once('connect', () => c.sock.write(Buffer.from([0, 40])));
    c.sock.once('close', () => {
      attacker.delete(c);
      setTimeout(attack, 50);
    });
  };
  const drip = setInterval(() => {
    for (const c of attacker) if (!c.closed && c.sock.writable) c.sock.write(Buffer.from([0]));
  }, 500);
  try {
    for (let i = 0; i < 1100; i++) attack();
    await sleep(1500);
    const results: string[] = [];
    for (let i = 0; i < 8; i++) {
      results.push(await query(cache, '127.0.0.1'));
      await sleep(400);
    }
    t.log(`attacker connections open at the end: ${[...attacker].filter((c) => !c.closed).length}`);
    t.deepEqual(results, Array(8).fill('answered'), 'every query of the other client is answered');
  } finally {
    stop = true;
    clearInterval(drip);
    for (const c of attacker) c.sock.destroy();
    await cache.stop();
  }
});

test('a message must be whole within the deadline from its first byte, however often bytes arrive', async (t) => {
  const cache = await startTestCache(['--zone', `cluster.local=${up.address}`, '--tcp-message-timeout-ms', '300']);
  try {
    const c = open(cache, '127.0.0.1');
    t.true(await c.opened);
    c.sock.write(Buffer.from([0, 40]));
    const started = Date.now();
    while (!c.closed && Date.now() - started < 3000) {
      c.sock.write(Buffer.from([0]));
      await sleep(50);
    }
    const took = Date.now() - started;
    t.true(c.closed, 'the dribbling connection is closed');
    t.true(took >= 250 && took < 1500, `closed after ${took} ms`);
    // A query sent whole, and two pipelined on one connection, are answered.
    t.is(await query(cache, '127.0.0.1'), 'answered');
    const p = open(cache, '127.0.0.1');
    t.true(await p.opened);
    const one = withPrefix(buildQuery(NAME, 'A'));
    p.sock.write(Buffer.concat([one, one.subarray(0, 5)]));
    await sleep(100);
    p.sock.write(one.subarray(5));
    const until = Date.now() + 2000;
    while (p.answers < 2 && Date.now() < until) await sleep(10);
    t.is(p.answers, 2);
    // Idle between messages is not a partial message: the connection stays.
    await sleep(500);
    t.false(p.closed);
    p.sock.destroy();
  } finally {
    await cache.stop();
  }
});

test('connections per client address are capped; other addresses are still served', async (t) => {
  const cache = await startTestCache(['--zone', `cluster.local=${up.address}`, '--tcp-max-connections-per-client', '3']);
  const held: Conn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const c = open(cache, '127.0.0.3');
      held.push(c);
      t.true(await c.opened);
    }
    await sleep(100);
    t.true(held.every((c) => !c.closed), 'three connections are allowed');
    t.is(await query(cache, '127.0.0.3'), 'closed by the server', 'a fourth from the same address is closed at once');
    t.is(await query(cache, '127.0.0.4'), 'answered', 'another address is served');
    held[0].sock.destroy();
    await sleep(100);
    t.is(await query(cache, '127.0.0.3'), 'answered', 'once one closes, the address may open another');
    t.true(await cache.metric('kproxy_dns_cache_tcp_refused_total', { reason: 'per_client' }) >= 1);
  } finally {
    for (const c of held) c.sock.destroy();
    await cache.stop();
  }
});

test('at the total cap the oldest idle connection is closed to make room; busy ones are kept', async (t) => {
  const cache = await startTestCache(['--zone', `cluster.local=${up.address}`, '--tcp-max-connections', '4']);
  const held: Conn[] = [];
  try {
    // c0 is mid-message (busy); c1..c3 asked once and are idle, c1 the oldest.
    const c0 = open(cache, '127.0.0.5');
    held.push(c0);
    t.true(await c0.opened);
    c0.sock.write(Buffer.from([0, 40, 1]));
    for (let i = 1; i < 4; i++) {
      const c = open(cache, '127.0.0.5');
      held.push(c);
      t.true(await c.opened);
      c.sock.write(withPrefix(buildQuery(NAME, 'A')));
      while (c.answers === 0) await sleep(10);
      await sleep(20);
    }
    t.is(await query(cache, '127.0.0.6'), 'answered', 'a new client gets a connection at the cap');
    await sleep(100);
    t.deepEqual(held.map((c) => c.closed), [false, true, false, false], 'the oldest idle one (c1) made room, the busy one stayed');
    t.true(await cache.metric('kproxy_dns_cache_tcp_reclaimed_total') >= 1);
  } finally {
    for (const c of held) c.sock.destroy();
    await cache.stop();
  }
});
