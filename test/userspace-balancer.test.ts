// Endpoint choice: round robin, least connections, power of two choices,
// source hash, ClientIP affinity with its timeout, and passive health
// (ejection after failures in a row, back-off doubling, return).
import test from 'ava';
import { AffinityTable, Pool } from '../modes/userspace/balancer.ts';
import { HealthTracker, type EndpointState } from '../modes/userspace/health.ts';

function setup(n: number, now = { t: 1000 }) {
  const health = new HealthTracker({ threshold: 3, ejectMs: 1000, maxEjectMs: 4000 }, () => now.t);
  const eps = Array.from({ length: n }, (_, i) => health.get(`10.0.0.${i + 1}:80`, `10.0.0.${i + 1}`, 80));
  return { health, eps, now };
}

function count(picks: (EndpointState | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of picks) out[p?.key ?? 'none'] = (out[p?.key ?? 'none'] ?? 0) + 1;
  return out;
}

test('round robin spreads evenly and skips what this connection tried', (t) => {
  const { eps } = setup(3);
  const pool = new Pool('rr', eps, undefined, () => 0);
  t.deepEqual(Object.values(count(Array.from({ length: 30 }, () => pool.pick('c', undefined, 1000)))), [10, 10, 10]);
  const tried = new Set([eps[0], eps[1]]);
  for (let i = 0; i < 5; i++) t.is(pool.pick('c', tried, 1000), eps[2]);
  t.is(pool.pick('c', new Set(eps), 1000), undefined);
  t.is(new Pool('rr', [], undefined).pick('c', undefined, 0), undefined);
});

test('least connections takes the endpoint with the fewest open, ties in turn', (t) => {
  const { eps } = setup(3);
  eps[0].active = 5;
  eps[1].active = 2;
  eps[2].active = 2;
  const pool = new Pool('lc', eps, undefined, () => 0);
  const a = pool.pick('c', undefined, 0)!;
  const b = pool.pick('c', undefined, 0)!;
  t.not(a, eps[0]);
  t.not(b, eps[0]);
  t.not(a, b);
  eps[2].active = 0;
  t.is(pool.pick('c', undefined, 0), eps[2]);
});

test('power of two choices never picks the busier of two and spreads over all', (t) => {
  const { eps } = setup(4);
  eps[3].active = 100;
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const pool = new Pool('p2c', eps, undefined, random);
  const c = count(Array.from({ length: 400 }, () => pool.pick('c', undefined, 0)));
  // The busy endpoint only wins when both samples were it, which the sampler avoids.
  t.is(c['10.0.0.4:80'] ?? 0, 0);
  for (const k of ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']) t.true((c[k] ?? 0) > 50, `${k}: ${c[k]}`);
  t.is(new Pool('p2c', [eps[0]], undefined, random).pick('c', undefined, 0), eps[0]);
});

test('source hash keeps a client on one endpoint and moves it only when that one fails', (t) => {
  const { eps } = setup(5);
  const pool = new Pool('sh', eps, undefined);
  const first = pool.pick('192.168.50.2', undefined, 0)!;
  for (let i = 0; i < 10; i++) t.is(pool.pick('192.168.50.2', undefined, 0), first);
  const spread = new Set(Array.from({ length: 200 }, (_, i) => pool.pick(`10.9.${i >> 8}.${i & 255}`, undefined, 0)!.key));
  t.true(spread.size >= 4);
  const next = pool.pick('192.168.50.2', new Set([first]), 0)!;
  t.not(next, first);
});

test('ClientIP affinity sticks until the client is idle for the timeout', (t) => {
  const { eps } = setup(3);
  const affinity = new AffinityTable(10);
  const pool = new Pool('rr', eps, affinity, () => 0);
  const e = pool.pick('c1', undefined, 0)!;
  affinity.remember('c1', e.key, 0);
  for (let i = 0; i < 5; i++) t.is(pool.pick('c1', undefined, 9_000), e);
  affinity.remember('c1', e.key, 9_000);
  t.is(pool.pick('c1', undefined, 18_000), e);
  // Idle for longer than the timeout: round robin again (and the entry is gone).
  t.is(affinity.lookup('c1', 19_001), undefined);
  t.is(affinity.size, 0);
  affinity.remember('c2', eps[1].key, 0);
  affinity.sweep(10_001);
  t.is(affinity.size, 0);
});

test('an endpoint failing three times in a row is skipped, backs off doubling, and returns', (t) => {
  const { health, eps, now } = setup(2);
  const pool = new Pool('rr', eps, undefined, () => 0);
  t.false(health.failed(eps[0], 'ECONNREFUSED'));
  t.false(health.failed(eps[0], 'ECONNREFUSED'));
  t.true(health.failed(eps[0], 'ECONNREFUSED'));
  t.true(eps[0].ejected(now.t));
  for (let i = 0; i < 6; i++) t.is(pool.pick('c', undefined, now.t), eps[1]);
  now.t += 1000;
  t.false(eps[0].ejected(now.t));
  // Back on probation: one failure ejects it again, for twice as long.
  t.true(health.failed(eps[0], 'ETIMEDOUT'));
  t.is(eps[0].ejectedUntil - now.t, 2000);
  now.t += 2000;
  t.true(health.failed(eps[0], 'ETIMEDOUT'));
  now.t += 4000;
  t.true(health.failed(eps[0], 'ETIMEDOUT'));
  t.is(eps[0].ejectedUntil - now.t, 4000, 'capped');
  now.t += 4000;
  health.succeeded(eps[0]);
  t.is(eps[0].ejections, 0);
  t.false(health.failed(eps[0], 'ECONNREFUSED'), 'a healthy endpoint needs three failures again');
});

test('when every endpoint is ejected they are tried anyway', (t) => {
  const { health, eps, now } = setup(2);
  for (const e of eps) for (let i = 0; i < 3; i++) health.failed(e, 'x');
  const pool = new Pool('rr', eps, undefined, () => 0);
  t.truthy(pool.pick('c', undefined, now.t));
  t.is(pool.pick('c', new Set([eps[0]]), now.t), eps[1]);
});

test('unused endpoints are forgotten', (t) => {
  const { health, eps } = setup(2);
  eps[0].uses = 1;
  eps[1].active = 1;
  health.get('10.0.0.9:80', '10.0.0.9', 80);
  health.sweep();
  t.deepEqual([...health.endpoints.keys()], ['10.0.0.1:80', '10.0.0.2:80']);
});
