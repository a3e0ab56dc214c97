// The forwarder's supervisor with real worker processes on loopback: a bad
// table changes nothing, counters are summed over workers, a worker that
// dies is replaced and serves the table again. And the handover's reading
// of the kernel's socket tables.
import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { silentLogger } from '../lib/log.ts';
import { Forwarder } from '../modes/userspace/forwarder.ts';
import { boundSockets, procKey, socketInodes, successorReady } from '../modes/userspace/handover.ts';
import type { ForwarderTable } from '../modes/userspace/table.ts';

async function backend(): Promise<{ port: number; close(): void }> {
  const server = net.createServer((s) => { s.on('error', () => {}); s.end('hi\n'); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let d = '';
    s.on('data', (x) => { d += x; });
    s.on('end', () => resolve(d));
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'ERROR'));
  });
}

const port = 24000 + (process.pid % 1000) * 2;

test.serial('two workers serve one table; a bad table changes nothing; a killed worker is replaced', async (t) => {
  const b = await backend();
  t.teardown(() => b.close());
  const f = await Forwarder.start(silentLogger(), { workers: 2, migrateReq: false });
  t.teardown(() => f.stop(0));
  const table: ForwarderTable = {
    clusterSources: [],
    listeners: [{ ip: '127.0.0.1', port, protocol: 'TCP', service: 'test/fwd:p', algorithm: 'rr', affinitySeconds: 0, sourceRanges: [], remote: { endpoints: [{ ip: '127.0.0.1', port: b.port }], whenEmpty: 'reject' } }],
  };
  t.deepEqual((await f.apply(table)).failed, []);
  await t.throwsAsync(f.apply({ clusterSources: [], listeners: [{ ...table.listeners[0], port: 0 }] }), { message: /listeners\[0\]\.port/ });
  t.is(f.table.listeners[0].port, port, 'the bad table was not taken');
  for (let i = 0; i < 20; i++) t.is(await ask(port), 'hi\n');
  let s = await f.snapshot();
  t.is(s.workers, 2);
  t.is(s.listening, 2, 'each worker listens (on one socket the supervisor passed to both)');
  t.is(s.services['TCP test/fwd:p'].connections, 20);
  t.is(boundSockets().get(procKey('TCP', '127.0.0.1', port))?.size, 1, 'one listening socket, shared by both workers');
  const [victim] = f.pids;
  process.kill(victim, 'SIGKILL');
  for (let i = 0; i < 20; i++) t.is(await ask(port), 'hi\n', 'the other worker keeps serving');
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && (f.pids.includes(victim) || (await f.snapshot().catch(() => undefined))?.listening !== 2)) await new Promise((r) => setTimeout(r, 100));
  t.false(f.pids.includes(victim));
  s = await f.snapshot();
  t.is(s.listening, 2, 'the replacement listens again');
  t.is(boundSockets().get(procKey('TCP', '127.0.0.1', port))?.size, 2, 'the replacement bound its own socket beside the shared one');
  for (let i = 0; i < 10; i++) t.is(await ask(port), 'hi\n');
});

test('the handover reads listening sockets from the kernel tables', (t) => {
  const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A00600A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A00600A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0A00600A:0050 0200A8C0:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
`;
  const tcp6 = `  sl  local_address                         remote_address                        st
   0: B80D0120000000000000000010000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4
`;
  const udp = `  sl  local_address rem_address   st
   0: 0A00600A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5
   1: 0100007F:9C40 0B00B40A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 6
`;
  const files: Record<string, string> = { '/proc/net/tcp': tcp, '/proc/net/tcp6': tcp6, '/proc/net/udp': udp };
  const bound = boundSockets((p) => {
    if (!(p in files)) throw new Error('absent');
    return files[p];
  });
  t.deepEqual([...bound.get(procKey('TCP', '10.96.0.10', 80))!], ['1', '2']);
  t.deepEqual([...bound.get(procKey('TCP', '2001:db8::10', 443))!], ['4']);
  t.deepEqual([...bound.get(procKey('UDP', '10.96.0.10', 53))!], ['5']);
  t.is(bound.size, 3, 'connected sockets are not listeners');
  const keys = [procKey('TCP', '10.96.0.10', 80), procKey('UDP', '10.96.0.10', 53)];
  t.false(successorReady(keys, bound, new Set(['1', '5'])), 'the UDP listener has no socket of another process yet');
  t.true(successorReady([keys[0]], bound, new Set(['1'])));
  t.false(successorReady([keys[0]], bound, new Set(['1', '2'])), 'both sockets are ours (two workers)');
  t.false(successorReady([], bound, new Set()));
  t.true(socketInodes([process.pid]) instanceof Set);
  t.true(boundSockets().size >= 0, 'reads this machine\'s tables without failing');
});
