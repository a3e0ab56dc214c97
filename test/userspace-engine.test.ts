// The forwarding engine in this process, on loopback with real sockets:
// spreading, retry past a refused endpoint, half-close, resets both ways,
// refusal and drop verdicts, draining, idle timeout, and UDP flows with
// 64 KiB datagrams answered from the address the client used.
import test, { type ExecutionContext } from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { silentLogger } from '../lib/log.ts';
import { Engine } from '../modes/userspace/engine.ts';
import { relayModule } from '../modes/userspace/native-tcp.ts';
import { udpRelayModule } from '../modes/userspace/native-udp.ts';
import type { EngineOptions } from '../modes/userspace/listener-state.ts';
import type { EndpointSpec, ForwarderTable, ListenerSpec } from '../modes/userspace/table.ts';

interface Backend {
  readonly ep: EndpointSpec;
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 with its own behaviour per connection. */
async function tcpBackend(onConn: (s: net.Socket) => void): Promise<Backend> {
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    onConn(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return { ep: { ip: '127.0.0.1', port }, close: () => new Promise((r) => {
    server.close(() => r());
    for (const s of open) s.destroy();
  }) };
}

/** Answers every connection with `name` and closes. */
const named = (name: string) => tcpBackend((s) => s.end(`${name}\n`));

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<EndpointSpec> {
  const b = await named('dead');
  await b.close();
  return b.ep;
}

type Relay = 'native' | 'node';

/** Each test runs against both TCP relays: the C one and Node's sockets (the fallback). */
function both(title: string, fn: (t: ExecutionContext<{ relay: Relay }>) => Promise<void>): void {
  for (const relay of ['native', 'node'] as const) {
    test(`[${relay}] ${title}`, async (t) => {
      t.context = { relay };
      await fn(t as ExecutionContext<{ relay: Relay }>);
    });
  }
}

test('the native TCP and UDP relays are built (not only the Node.js fallback)', (t) => {
  for (const m of [relayModule(), udpRelayModule()]) {
    t.false(m instanceof Error, m instanceof Error ? `${m.message}: install g++, make and python3, then npm ci` : '');
  }
});

let nextPort = 21000 + (process.pid % 2000) * 10;
const freePort = () => nextPort++;

function listener(port: number, endpoints: EndpointSpec[], over: Partial<ListenerSpec> = {}): ListenerSpec {
  return { ip: '127.0.0.1', port, protocol: 'TCP', service: `test/svc${port}:p`, algorithm: 'rr', affinitySeconds: 0, sourceRanges: [], remote: { endpoints, whenEmpty: 'reject' }, ...over };
}
const table = (...listeners: ListenerSpec[]): ForwarderTable => ({ clusterSources: [], listeners });

function engine(t: { teardown(fn: () => Promise<void> | void): void; context: unknown }, opts: Partial<EngineOptions> = {}): Engine {
  const e = new Engine(silentLogger(), { reusePort: false, relay: (t.context as { relay: Relay }).relay, ...opts });
  t.teardown(() => e.stop(0));
  return e;
}

/** Connects, optionally sends, and collects the answer until the server ends it (or an error). */
function ask(port: number, send?: string, opts: { host?: string; end?: boolean } = {}): Promise<{ data: string; error?: string }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: opts.host ?? '127.0.0.1', port, allowHalfOpen: true });
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d) => { data += d; });
    s.on('connect', () => {
      if (send !== undefined) s.write(send);
      if (opts.end) s.end();
    });
    s.on('end', () => { s.end(); resolve({ data }); });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ data, error: e.code }));
    s.setTimeout(3000, () => { s.destroy(); resolve({ data, error: 'TIMEOUT' }); });
  });
}

both('TCP round robin over three endpoints, counters per Service port', async (t) => {
  const backends = await Promise.all(['a', 'b', 'c'].map(named));
  t.teardown(() => Promise.all(backends.map((b) => b.close())).then(() => {}));
  const e = engine(t);
  const port = freePort();
  t.deepEqual((await e.apply(table(listener(port, backends.map((b) => b.ep))))).failed, []);
  const answers: Record<string, number> = {};
  for (let i = 0; i < 30; i++) {
    const r = await ask(port);
    answers[r.data.trim()] = (answers[r.data.trim()] ?? 0) + 1;
  }
  t.deepEqual(answers, { a: 10, b: 10, c: 10 });
  const c = e.snapshot().services[`TCP test/svc${port}:p`];
  t.is(c.connections, 30);
  await new Promise((r) => setTimeout(r, 100));
  t.is(e.snapshot().services[`TCP test/svc${port}:p`].active, 0);
  t.is(c.bytesToClients, 60);
});

both('a refused endpoint is retried on the next one and ejected after three failures', async (t) => {
  const live = await Promise.all(['a', 'b'].map(named));
  t.teardown(() => Promise.all(live.map((b) => b.close())).then(() => {}));
  const dead = await deadPort();
  const e = engine(t, { health: { threshold: 3, ejectMs: 60_000, maxEjectMs: 60_000 } });
  const port = freePort();
  await e.apply(table(listener(port, [dead, live[0].ep, live[1].ep])));
  // One at a time, so each connection sees what the previous ones learnt.
  const results = [];
  for (let i = 0; i < 60; i++) results.push(await ask(port));
  t.deepEqual(results.filter((r) => r.error !== undefined || r.data === ''), []);
  const c = e.snapshot().services[`TCP test/svc${port}:p`];
  t.is(c.connectFailures, 3, 'only the failures before the ejection');
  t.is(c.retries, 3);
  const report = e.snapshot().endpoints.find((x) => x.key === `127.0.0.1:${dead.port}`)!;
  t.true(report.ejected);
  t.is(report.lastError, 'ECONNREFUSED');
  t.is(e.snapshot().ejected[`TCP test/svc${port}:p`], 1);
});

both('every endpoint refusing: the client gets a reset after the bounded attempts', async (t) => {
  const e = engine(t, { connectTimeoutsMs: [100, 100] });
  const port = freePort();
  await e.apply(table(listener(port, [await deadPort(), await deadPort(), await deadPort()])));
  const r = await ask(port);
  t.is(r.error, 'ECONNRESET');
  const c = e.snapshot().services[`TCP test/svc${port}:p`];
  t.is(c.connectFailures, 2);
  t.is(c.refused, 1);
});

both('half-close: a client that ends its side still gets the whole answer', async (t) => {
  // Answers only after the client's end: the byte count it read, then a large body.
  const b = await tcpBackend((s) => {
    let n = 0;
    s.on('data', (d) => { n += d.length; });
    s.on('end', () => s.end(`got ${n}\n${'x'.repeat(1 << 20)}`));
  });
  t.teardown(() => b.close());
  const e = engine(t);
  const port = freePort();
  await e.apply(table(listener(port, [b.ep])));
  const r = await ask(port, 'y'.repeat(300_000), { end: true });
  t.is(r.error, undefined);
  t.true(r.data.startsWith('got 300000\n'));
  t.is(r.data.length, 'got 300000\n'.length + (1 << 20));
});

both('resets pass through both ways', async (t) => {
  const sawReset: string[] = [];
  const b = await tcpBackend((s) => {
    s.on('error', (err: NodeJS.ErrnoException) => sawReset.push(err.code ?? '?'));
    s.on('data', (d) => { if (String(d) === 'reset me') s.resetAndDestroy(); });
  });
  t.teardown(() => b.close());
  const e = engine(t);
  const port = freePort();
  await e.apply(table(listener(port, [b.ep])));
  t.is((await ask(port, 'reset me')).error, 'ECONNRESET');
  // The client resets: the backend sees a reset too.
  const c = net.connect(port, '127.0.0.1');
  await once(c, 'connect');
  c.write('hello');
  await new Promise((r) => setTimeout(r, 100));
  c.resetAndDestroy();
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(sawReset, ['ECONNRESET']);
  t.is(e.snapshot().open, 0);
});

both('no endpoints: reset at once; outside the source ranges: held without an answer', async (t) => {
  const b = await named('a');
  t.teardown(() => b.close());
  const e = engine(t);
  const empty = freePort();
  const ranged = freePort();
  await e.apply(table(listener(empty, []), listener(ranged, [b.ep], { sourceRanges: ['10.0.0.0/8'] })));
  const started = Date.now();
  t.is((await ask(empty)).error, 'ECONNRESET');
  t.true(Date.now() - started < 500);
  const held = net.connect(ranged, '127.0.0.1');
  let got = '';
  held.on('data', (d) => { got += d; });
  held.on('error', () => {});
  await once(held, 'connect');
  await new Promise((r) => setTimeout(r, 300));
  t.is(got, '');
  t.false(held.destroyed);
  held.destroy();
  const s = e.snapshot();
  t.is(s.services[`TCP test/svc${empty}:p`].refused, 1);
  t.is(s.services[`TCP test/svc${ranged}:p`].dropped, 1);
});

both('a removed endpoint drains: its open connection goes on, new ones avoid it, the grace period ends it', async (t) => {
  const echo = (name: string) => tcpBackend((s) => s.on('data', (d) => s.write(`${name}:${d}`)));
  const [a, b] = [await echo('a'), await echo('b')];
  t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
  const e = engine(t, { drainGraceMs: 1500 });
  const port = freePort();
  await e.apply(table(listener(port, [a.ep])));
  const long = net.connect(port, '127.0.0.1');
  long.setEncoding('utf8');
  let closedAt = 0;
  long.on('error', () => {});
  long.on('close', () => { closedAt = Date.now(); });
  const say = async (m: string) => {
    long.write(m);
    const [d] = await once(long, 'data');
    return d as string;
  };
  await once(long, 'connect');
  t.is(await say('1'), 'a:1');
  const removedAt = Date.now();
  await e.apply(table(listener(port, [b.ep])));
  t.is(await say('2'), 'a:2', 'still served by the removed endpoint');
  const fresh = net.connect(port, '127.0.0.1');
  fresh.setEncoding('utf8');
  fresh.write('3');
  t.is((await once(fresh, 'data'))[0], 'b:3');
  fresh.destroy();
  const drained = e.snapshot().endpoints.find((x) => x.key === `127.0.0.1:${a.ep.port}`)!;
  t.is(drained.uses, 0);
  t.is(drained.active, 1);
  await new Promise((r) => setTimeout(r, 3000));
  t.true(closedAt > 0, 'closed after the grace period');
  t.true(closedAt - removedAt >= 1400 && closedAt - removedAt < 3000, `${closedAt - removedAt} ms`);
});

both('an idle connection is closed after the idle timeout', async (t) => {
  const b = await tcpBackend(() => {});
  t.teardown(() => b.close());
  const e = engine(t, { tcpIdleMs: 300 });
  const port = freePort();
  await e.apply(table(listener(port, [b.ep])));
  const started = Date.now();
  const r = await ask(port);
  t.is(r.error, undefined);
  t.true(Date.now() - started >= 250);
});

both('UDP: one flow per client port, 64 KiB datagrams intact, replies from the address the client used', async (t) => {
  const server = dgram.createSocket('udp4');
  server.on('message', (m, r) => server.send(Buffer.concat([Buffer.from(`${r.port}:`), m]), r.port, r.address));
  server.bind(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const e = engine(t, { udpIdleMs: 60_000 });
  const port = freePort();
  await e.apply(table(listener(port, [{ ip: '127.0.0.1', port: server.address().port }], { protocol: 'UDP', ip: '127.0.0.2' })));
  const clients = await Promise.all(Array.from({ length: 20 }, async () => {
    const c = dgram.createSocket('udp4');
    c.bind(0, '127.0.0.1');
    await once(c, 'listening');
    return c;
  }));
  t.teardown(() => { for (const c of clients) c.close(); });
  const big = Buffer.alloc(65507 - 6, 0x61);
  const answers = await Promise.all(clients.map(async (c, i) => {
    const payload = i === 0 ? big : Buffer.from(`hello ${i}`);
    c.send(payload, port, '127.0.0.2');
    const [m, rinfo] = (await once(c, 'message')) as [Buffer, dgram.RemoteInfo];
    c.send(payload, port, '127.0.0.2');
    const [m2] = (await once(c, 'message')) as [Buffer];
    return { m, m2, from: rinfo.address, payload };
  }));
  for (const a of answers) {
    t.is(a.from, '127.0.0.2');
    const sep = a.m.indexOf(':');
    t.deepEqual(a.m.subarray(sep + 1), a.payload);
    t.is(a.m.subarray(0, sep).toString(), a.m2.subarray(0, a.m2.indexOf(':')).toString(), 'the same flow (source port) for both datagrams');
  }
  t.is(new Set(answers.map((a) => a.m.subarray(0, a.m.indexOf(':')).toString())).size, 20);
  const s = e.snapshot();
  t.is(s.services[`UDP test/svc${port}:p`].connections, 20);
  t.is(s.open, 20);
});

both('UDP without endpoints is not bound, so the kernel refuses; endpoints appearing bind it', async (t) => {
  const e = engine(t);
  const port = freePort();
  const spec = listener(port, [], { protocol: 'UDP' });
  await e.apply(table(spec));
  const c = dgram.createSocket('udp4');
  t.teardown(() => c.close());
  c.connect(port, '127.0.0.1');
  await once(c, 'connect');
  c.send('x');
  const [err] = (await once(c, 'error')) as [NodeJS.ErrnoException];
  t.is(err.code, 'ECONNREFUSED');
  const server = dgram.createSocket('udp4');
  server.on('message', (_m, r) => server.send('pong', r.port, r.address));
  server.bind(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  await e.apply(table({ ...spec, remote: { endpoints: [{ ip: '127.0.0.1', port: server.address().port }], whenEmpty: 'reject' } }));
  c.send('x');
  const [m] = (await once(c, 'message')) as [Buffer];
  t.is(m.toString(), 'pong');
});

both('a listener that cannot bind is reported, the others serve', async (t) => {
  const b = await named('a');
  t.teardown(() => b.close());
  const e = engine(t);
  const port = freePort();
  const r = await e.apply(table(listener(port, [b.ep]), listener(port, [b.ep], { ip: '192.0.2.1' })));
  t.deepEqual(r.failed, [{ key: `TCP/192.0.2.1:${port}`, error: 'EADDRNOTAVAIL' }]);
  t.is(r.listeners, 1);
  t.is((await ask(port)).data, 'a\n');
});

both('ClientIP affinity holds for connections accepted together, before the first one connected', async (t) => {
  const backends = await Promise.all(['a', 'b', 'c'].map(named));
  t.teardown(() => Promise.all(backends.map((b) => b.close())).then(() => {}));
  // Long connect timeouts: on a loaded machine a retry (to another endpoint, as designed) would move the client.
  const e = engine(t, { connectTimeoutsMs: [10_000] });
  const port = freePort();
  await e.apply(table(listener(port, backends.map((b) => b.ep), { affinitySeconds: 30 })));
  const answers = await Promise.all(Array.from({ length: 20 }, () => ask(port)));
  t.deepEqual(new Set(answers.map((a) => a.data)).size, 1, JSON.stringify(answers.map((a) => a.data)));
});
