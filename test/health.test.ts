// /healthz and /livez over real HTTP, with kube-proxy's semantics.
import test from 'ava';
import { createServer, type AddressInfo } from 'node:net';
import type { V1Node } from '@kubernetes/client-node';
import { ProxierHealth, startHealthServer } from '../proxy/health.ts';
import { silentLogger } from '../lib/log.ts';

async function get(port: number, path: string): Promise<{ status: number; body: Record<string, unknown>; type: string | null }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  const text = await r.text();
  return { status: r.status, body: text.startsWith('{') ? JSON.parse(text) : { text }, type: r.headers.get('content-type') };
}

function setup() {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const health = new ProxierHealth({ healthTimeoutMs: 60_000, now: () => now });
  return { health, advance: (ms: number) => { now += ms; }, now: () => now };
}

test('/healthz 503 before the first sync, 200 after it, with kube-proxy\'s JSON fields; /livez alive while starting up', async (t) => {
  const { health, now } = setup();
  const srv = await startHealthServer(health, 0, '127.0.0.1', silentLogger());
  t.teardown(() => srv.close());
  let r = await get(srv.port, '/healthz');
  t.is(r.status, 503);
  t.is(r.type, 'application/json');
  t.deepEqual(r.body, { lastUpdated: '0001-01-01T00:00:00.000Z', currentTime: '2026-01-01T00:00:00.000Z', nodeEligible: true });
  t.is((await get(srv.port, '/livez')).status, 200, 'alive while starting up, as kube-proxy');

  health.updated(now());
  r = await get(srv.port, '/healthz');
  t.is(r.status, 200);
  t.deepEqual(r.body, { lastUpdated: '2026-01-01T00:00:00.000Z', currentTime: '2026-01-01T00:00:00.000Z', nodeEligible: true });
  const live = await get(srv.port, '/livez');
  t.is(live.status, 200);
  t.false('nodeEligible' in live.body, '/livez has no nodeEligible');
  t.is((await get(srv.port, '/other')).status, 404);
});

test('a queued change older than the health timeout makes both endpoints 503 until a sync', async (t) => {
  const { health, advance, now } = setup();
  const srv = await startHealthServer(health, 0, '127.0.0.1', silentLogger());
  t.teardown(() => srv.close());
  health.updated(now());
  advance(1000);
  health.queued(now());
  advance(60_000);
  t.is((await get(srv.port, '/healthz')).status, 200, 'exactly the timeout is still healthy');
  health.queued(now()); // a later change does not restart the clock
  advance(1);
  t.is((await get(srv.port, '/healthz')).status, 503);
  t.is((await get(srv.port, '/livez')).status, 503);
  health.updated(now());
  t.is((await get(srv.port, '/healthz')).status, 200);
  // No queued change: time alone never makes it unhealthy.
  advance(3_600_000);
  t.is((await get(srv.port, '/livez')).status, 200);
});

test('a node being deleted fails /healthz but not /livez', async (t) => {
  const { health, now } = setup();
  const srv = await startHealthServer(health, 0, '127.0.0.1', silentLogger());
  t.teardown(() => srv.close());
  health.updated(now());
  const node: V1Node = { metadata: { name: 'node-a' }, spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } };
  health.syncNode(node);
  const r = await get(srv.port, '/healthz');
  t.is(r.status, 503);
  t.is(r.body.nodeEligible, false);
  t.is((await get(srv.port, '/livez')).status, 200);
  health.syncNode({ metadata: { name: 'node-a', deletionTimestamp: new Date() } });
  t.is((await get(srv.port, '/healthz')).status, 503);
  health.syncNode({ metadata: { name: 'node-a' } });
  t.is((await get(srv.port, '/healthz')).status, 200);
});

test('runner reports drive health: pendingSince keeps the clock running', (t) => {
  const { health, advance, now } = setup();
  const base = now();
  health.onSynced({ finishedAt: base, pendingSince: base - 70_000 } as never);
  t.false(health.status().healthy, 'a change that arrived during the sync and is older than the timeout');
  advance(1);
  health.onSynced({ finishedAt: base + 1 } as never);
  t.true(health.status().healthy);
});

test('a busy port is a KPROXY_BIND_FAILED error', async (t) => {
  const { health } = setup();
  const a = await startHealthServer(health, 0, '127.0.0.1', silentLogger());
  t.teardown(() => a.close());
  const err = await t.throwsAsync(startHealthServer(health, a.port, '127.0.0.1', silentLogger()));
  t.is((err as { code?: string }).code, 'KPROXY_BIND_FAILED');
  t.regex(err!.message, /EADDRINUSE/);
});

test('with reusePort a successor binds beside a kproxy that holds the port; another program\'s socket still makes it fail', async (t) => {
  const { health } = setup();
  const reuse = { reusePort: true };
  const a = await startHealthServer(health, 0, '127.0.0.1', silentLogger(), reuse);
  t.teardown(() => a.close());
  const b = await startHealthServer(health, a.port, '127.0.0.1', silentLogger(), reuse);
  t.teardown(() => b.close());
  t.is(b.port, a.port);
  const other = createServer();
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => other.close(() => r())));
  const port = (other.address() as AddressInfo).port;
  const err = await t.throwsAsync(startHealthServer(health, port, '127.0.0.1', silentLogger(), reuse));
  t.is((err as { code?: string }).code, 'KPROXY_BIND_FAILED');
  t.regex(err!.message, /EADDRINUSE/);
});

test('a first sync that keeps failing makes /livez 503 once it waited longer than the timeout', (t) => {
  const { health, advance, now } = setup();
  health.onQueued(now());
  advance(60_000);
  t.true(health.status().live, 'exactly the timeout is still alive');
  t.false(health.status().healthy, 'never synced: not ready');
  advance(1);
  t.false(health.status().live);
});
