// Runner scheduling with a hand-driven clock: min interval, coalescing,
// burst, retry → full, drift → full, hourly full resync, no overlap.
import test from 'ava';
import type { Backend, Damage, DriftReport, DriftWatch, Plan } from '../modes/backend.ts';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { silentLogger } from '../lib/log.ts';
import type { Changes, NodeState, StaleUdpEndpoint } from '../proxy/model.ts';
import { Runner, type Clock, type RunnerOptions, type SyncListener, type SyncReport } from '../proxy/runner.ts';
import type { ServiceTracker } from '../proxy/tracker-api.ts';
import { nodeState, svc } from './helpers/state.ts';

class FakeClock implements Clock {
  t = 1_000_000;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private seq = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  /** Moves time forward, firing due timers in order and letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at);
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

class FakeTracker implements ServiceTracker {
  full = false;
  /** Stale UDP endpoints the next snapshot reports (once). */
  stale: StaleUdpEndpoint[] = [];
  state: NodeState = nodeState([svc({ name: 'ns/a:http', clusterIP: '10.96.0.1', port: 80 })]);
  apply(): void {}
  pending(): number {
    return 0;
  }
  synced(): boolean {
    return true;
  }
  snapshot(): { state: NodeState; changes: Changes; triggerTimes: readonly number[] } {
    const full = this.full;
    this.full = false;
    const staleUdpEndpoints = this.stale;
    this.stale = [];
    return { state: this.state, changes: { full, services: new Set(), staleUdpEndpoints, staleUdpServiceIPs: [] }, triggerTimes: [] };
  }
  requestFull(): void {
    this.full = true;
  }
}

class FakeBackend implements Backend {
  readonly mode = 'iptables' as const;
  readonly syncs: { at: number; full: boolean }[] = [];
  failNext = 0;
  drift = false;
  driftChecks = 0;
  /** When set, sync waits for this promise (to test overlap). */
  gate: Promise<void> | undefined;
  active = 0;
  maxActive = 0;
  private readonly clock: FakeClock;
  constructor(clock: FakeClock) {
    this.clock = clock;
  }
  plan(_state: NodeState, changes: Changes): Plan {
    return { full: changes.full, size: 1 };
  }
  async apply(plan: Plan): Promise<void> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    this.syncs.push({ at: this.clock.now(), full: plan.full });
    if (this.gate) await this.gate;
    this.active--;
    const ok = this.failNext <= 0;
    if (!ok) this.failNext--;
    if (!ok) throw new Error('boom');
  }
  owned(): Record<string, number> {
    return {};
  }
  render(): string {
    return '';
  }
  async readKernel(): Promise<string> {
    return '';
  }
  /** When set, drifted() waits for this promise (a slow kernel read). */
  driftGate: Promise<void> | undefined;
  async drifted(): Promise<boolean> {
    this.driftChecks++;
    if (this.driftGate) await this.driftGate;
    return this.drift;
  }
  async cleanup(): Promise<void> {}
}

function setup(opts: Partial<RunnerOptions> = {}, listeners: SyncListener[] = []) {
  const clock = new FakeClock();
  const tracker = new FakeTracker();
  const backend = new FakeBackend(clock);
  const afterSync: Changes[] = [];
  const runner = new Runner(
    { minSyncPeriodMs: 1000, syncPeriodMs: 30_000, ...opts },
    { tracker, backend, clock, log: silentLogger(), listeners, afterSync: async (c) => { afterSync.push(c); } },
  );
  const rel = () => backend.syncs.map((s) => ({ at: s.at - 1_000_000, full: s.full }));
  return { clock, tracker, backend, runner, afterSync, rel };
}

test('first sync is full and runs at start', async (t) => {
  const { runner, rel } = setup();
  const report = await runner.start();
  t.true(report.ok);
  t.true(report.full);
  t.deepEqual(rel(), [{ at: 0, full: true }]);
  await runner.stop();
});

test('min sync period: with one token a change waits for minSyncPeriod after the last sync', async (t) => {
  const { runner, clock, rel } = setup({ burstSyncs: 1 });
  await runner.start();
  runner.request();
  await clock.advance(999);
  t.is(rel().length, 1, 'no sync before minSyncPeriod has passed');
  await clock.advance(1);
  t.deepEqual(rel(), [{ at: 0, full: true }, { at: 1000, full: false }]);
  await runner.stop();
});

test('a burst of requests coalesces into one sync', async (t) => {
  const { runner, clock, rel } = setup({ burstSyncs: 1 });
  await runner.start();
  for (let i = 0; i < 50; i++) {
    runner.request();
    await clock.advance(10);
  }
  // 50 requests over 500 ms: all wait for t=1000 and go in one sync.
  await clock.advance(2000);
  t.deepEqual(rel().map((s) => s.at), [0, 1000]);
  await runner.stop();
});

test('burst of 2 (kube-proxy default) lets a lone change through at once, then rate-limits', async (t) => {
  const { runner, clock, rel } = setup();
  await runner.start();
  runner.request();
  await clock.advance(0);
  t.deepEqual(rel().map((s) => s.at), [0, 0], 'second token used at once');
  runner.request();
  await clock.advance(10);
  runner.request();
  await clock.advance(5000);
  // The bucket refills one token per 1000 ms after the first two were spent at t=0.
  t.deepEqual(rel().map((s) => s.at), [0, 0, 1000]);
  await runner.stop();
});

test('minSyncPeriod 0 syncs every request at once', async (t) => {
  const { runner, clock, rel } = setup({ minSyncPeriodMs: 0 });
  await runner.start();
  for (let i = 1; i <= 3; i++) {
    runner.request();
    await clock.advance(1);
  }
  t.deepEqual(rel().map((s) => s.at), [0, 0, 1, 2]);
  await runner.stop();
});

test('a failed sync is retried with backoff and the retry is full', async (t) => {
  const failures: number[] = [];
  const { runner, clock, backend, rel, afterSync } = setup({ retryInitialMs: 1000, syncPeriodMs: 30_000 }, [
    { onSyncFailed: (r) => failures.push(r.finishedAt - 1_000_000) },
  ]);
  await runner.start();
  afterSync.length = 0;
  backend.failNext = 3;
  runner.request();
  await clock.advance(0);
  t.deepEqual(rel()[1], { at: 0, full: false }, 'the change itself is partial');
  await clock.advance(10_000);
  // fail at 0 → retry 1000 (fails) → +2000 = 3000 (fails) → +4000 = 7000 (ok)
  t.deepEqual(rel().slice(1), [
    { at: 0, full: false },
    { at: 1000, full: true },
    { at: 3000, full: true },
    { at: 7000, full: true },
  ]);
  t.deepEqual(failures, [0, 1000, 3000]);
  t.is(afterSync.length, 1, 'conntrack cleanup only after the successful sync');
  // Backoff was reset: the next failure retries after 1000 again.
  backend.failNext = 1;
  runner.request();
  await clock.advance(5000);
  t.deepEqual(rel().slice(5).map((s) => ({ ...s, at: s.at - 10_000 })), [{ at: 0, full: false }, { at: 1000, full: true }]);
  await runner.stop();
});

test('backoff is capped at syncPeriod', async (t) => {
  const { runner, clock, backend, rel } = setup({ retryInitialMs: 1000, syncPeriodMs: 3000 });
  await runner.start();
  backend.failNext = 4;
  runner.request();
  await clock.advance(20_000);
  // 0 fail, +1000 fail, +2000 fail, +3000 (cap) fail, +3000 ok
  t.deepEqual(rel().slice(1).map((s) => s.at), [0, 1000, 3000, 6000, 9000]);
  await runner.stop();
});

test('drift is checked every syncPeriod and forces a full sync only when found', async (t) => {
  const { runner, clock, backend, rel } = setup({ syncPeriodMs: 30_000 });
  await runner.start();
  await clock.advance(60_000);
  t.is(backend.driftChecks, 2);
  t.is(rel().length, 1, 'no drift, no sync');
  backend.drift = true;
  await clock.advance(30_000);
  t.is(backend.driftChecks, 3);
  t.deepEqual(rel()[1], { at: 90_000, full: true });
  await runner.stop();
});

test('a slow drift check does not hold up a change; a check overlapping a sync is not trusted', async (t) => {
  const { runner, clock, backend, rel } = setup({ syncPeriodMs: 30_000, minSyncPeriodMs: 0 });
  await runner.start();
  let finishCheck!: () => void;
  backend.driftGate = new Promise((r) => { finishCheck = r; });
  backend.drift = true;
  await clock.advance(30_000);
  t.is(backend.driftChecks, 1, 'the check is under way');
  runner.request();
  await clock.advance(1);
  t.deepEqual(rel()[1], { at: 30_000, full: false }, 'the change synced at once while the check was still reading');
  finishCheck();
  await clock.advance(1);
  t.is(rel().length, 2, 'a verdict read across a sync forces nothing');
  backend.driftGate = undefined;
  await clock.advance(30_000);
  t.deepEqual(rel()[2], { at: 60_000, full: true }, 'the next check sees the drift');
  await runner.stop();
});

test('a full sync runs at least every hour', async (t) => {
  const { runner, clock, rel } = setup({ syncPeriodMs: 600_000 });
  await runner.start();
  await clock.advance(3_600_000);
  t.deepEqual(rel(), [{ at: 0, full: true }, { at: 3_600_000, full: true }]);
  // The hour is counted from the last full sync.
  await clock.advance(3_599_000);
  t.is(rel().length, 2);
  await runner.stop();
});

test('syncs never overlap; a request during a sync leads to one more sync after it', async (t) => {
  const { runner, clock, backend, rel } = setup({ minSyncPeriodMs: 0 });
  await runner.start();
  let open!: () => void;
  backend.gate = new Promise((r) => { open = r; });
  runner.request();
  await clock.advance(1);
  runner.request();
  runner.request();
  await clock.advance(100);
  t.is(rel().length, 2, 'second sync is still running');
  backend.gate = undefined;
  open();
  await clock.advance(1);
  t.is(rel().length, 3);
  t.is(backend.maxActive, 1);
  await runner.stop();
});

test('onQueued fires once per pending period; pendingSince reports changes that arrived during a sync', async (t) => {
  const queued: number[] = [];
  const pending: (number | undefined)[] = [];
  const { runner, clock, backend } = setup({ minSyncPeriodMs: 0 }, [
    { onQueued: (at) => queued.push(at - 1_000_000), onSynced: (r) => pending.push(r.pendingSince === undefined ? undefined : r.pendingSince - 1_000_000) },
  ]);
  await runner.start();
  let open!: () => void;
  backend.gate = new Promise((r) => { open = r; });
  runner.request();
  runner.request();
  await clock.advance(5);
  runner.request(); // arrives while the sync runs
  backend.gate = undefined;
  open();
  await clock.advance(1);
  t.deepEqual(queued, [0, 0, 5], 'the first sync, then the two pending periods');
  t.deepEqual(pending, [undefined, 5, undefined]);
  await runner.stop();
});

test('stop cancels the schedule', async (t) => {
  const { runner, clock, backend, rel } = setup();
  await runner.start();
  await runner.stop();
  runner.request();
  await clock.advance(3_600_000);
  t.is(rel().length, 1);
  t.is(backend.driftChecks, 0);
});

test('a drift check that fails counts as drift', async (t) => {
  const { runner, clock, backend, rel } = setup({ syncPeriodMs: 30_000 });
  backend.drifted = async () => { throw new Error('nft: cannot list'); };
  await runner.start();
  await clock.advance(30_000);
  t.deepEqual(rel()[1], { at: 30_000, full: true });
  await runner.stop();
});

test('a failed sync keeps its changes pending for health', async (t) => {
  const failed: (number | undefined)[] = [];
  const { runner, clock, backend } = setup({ minSyncPeriodMs: 0, retryInitialMs: 1000 }, [
    { onSyncFailed: (r) => failed.push(r.pendingSince === undefined ? undefined : r.pendingSince - 1_000_000) },
  ]);
  await runner.start();
  await clock.advance(100);
  backend.failNext = 1;
  runner.request();
  await clock.advance(0);
  t.deepEqual(failed, [100], 'the change queued at t=100 is still pending after the failure');
  await runner.stop();
});

test('stale UDP flows of a failed sync are cleared after the next successful one', async (t) => {
  const { runner, clock, backend, tracker, afterSync } = setup({ minSyncPeriodMs: 0, retryInitialMs: 1000 });
  await runner.start();
  afterSync.length = 0;
  const gone = (ip: string): StaleUdpEndpoint => ({ family: 4, serviceIPs: ['10.96.0.1'], servicePort: 53, nodePort: 0, endpointIP: ip, endpointPort: 53 });
  tracker.stale = [gone('10.180.0.1')];
  backend.failNext = 1;
  runner.request();
  await clock.advance(0);
  t.is(afterSync.length, 0, 'no cleanup after the failure');
  tracker.stale = [gone('10.180.0.2')];
  await clock.advance(1000);
  t.is(afterSync.length, 1);
  t.deepEqual(afterSync[0].staleUdpEndpoints.map((e) => e.endpointIP), ['10.180.0.1', '10.180.0.2']);
  runner.request();
  await clock.advance(0);
  t.deepEqual(afterSync[1].staleUdpEndpoints, [], 'owed flows are cleared once');
  await runner.stop();
});

test('the first sync counts as queued: a failing start-up keeps the change pending for health', async (t) => {
  const queued: number[] = [];
  const failed: (number | undefined)[] = [];
  const { runner, backend } = setup({}, [
    { onQueued: (at) => queued.push(at - 1_000_000), onSyncFailed: (r) => failed.push(r.pendingSince === undefined ? undefined : r.pendingSince - 1_000_000) },
  ]);
  backend.failNext = 1;
  const first = await runner.start();
  t.false(first.ok);
  t.deepEqual(queued, [0]);
  t.deepEqual(failed, [0]);
  await runner.stop();
});

/** A backend with the newer drift contract: findings queued, repaired by the next plan. */
class RepairingBackend extends FakeBackend {
  queued: Damage[] = [];
  queuedFull: string | undefined;
  checks = 0;
  nextCheck: DriftReport = { damage: [] };
  onDrift: ((r: DriftReport) => void) | undefined;
  watchStopped = false;
  readyGate: Promise<void> = Promise.resolve();
  readonly repaired: Damage[][] = [];
  async checkDrift(): Promise<DriftReport> {
    this.checks++;
    const r = this.nextCheck;
    this.nextCheck = { damage: [] };
    this.found(r);
    return r;
  }
  found(r: DriftReport): void {
    this.queued.push(...r.damage);
    this.queuedFull ??= r.full;
  }
  watchDrift(onDrift: (r: DriftReport) => void): DriftWatch {
    this.onDrift = onDrift;
    return { ready: this.readyGate, stop: async () => { this.watchStopped = true; } };
  }
  override plan(state: NodeState, changes: Changes): Plan {
    const full = changes.full || this.queuedFull !== undefined;
    const repairs = this.queuedFull !== undefined && full ? [{ what: 'full', object: this.queuedFull }] : [...this.queued];
    this.queued = [];
    this.queuedFull = undefined;
    this.repaired.push(repairs);
    return { ...super.plan(state, changes), full, repairs };
  }
}

function repairSetup(opts: Partial<RunnerOptions> = {}) {
  const clock = new FakeClock();
  const tracker = new FakeTracker();
  const backend = new RepairingBackend(clock);
  (backend as { drifted?: unknown }).drifted = undefined;
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  const log = pino({ level: 'info' }, sink);
  const synced: SyncReport[] = [];
  const runner = new Runner({ minSyncPeriodMs: 1000, syncPeriodMs: 30_000, ...opts }, { tracker, backend, clock, log, listeners: [{ onSynced: (r) => synced.push(r) }] });
  const rel = () => backend.syncs.map((s) => ({ at: s.at - 1_000_000, full: s.full }));
  return { clock, tracker, backend, runner, rel, lines, synced };
}

test('checkDrift findings are repaired by the next sync, partial unless the report asks for full; the repair is logged and reported', async (t) => {
  const { runner, clock, backend, rel, lines, synced } = repairSetup();
  await runner.start();
  backend.nextCheck = { damage: [{ what: 'chain', object: 'nat KUBE-SVC-X' }] };
  await clock.advance(30_000);
  t.is(backend.checks, 1);
  t.deepEqual(rel()[1], { at: 30_000, full: false });
  t.deepEqual(synced[1].result.repairs, [{ what: 'chain', object: 'nat KUBE-SVC-X' }]);
  t.true(lines.some((l) => l.msg === 'repaired kernel rules someone else changed' && JSON.stringify(l.repaired) === '["chain nat KUBE-SVC-X"]'));
  backend.nextCheck = { damage: [], full: 'the canary chain of the ip nat table was flushed or deleted' };
  await clock.advance(30_000);
  t.deepEqual(rel()[2], { at: 60_000, full: true });
  t.deepEqual(synced[2].result.repairs, [{ what: 'full', object: 'the canary chain of the ip nat table was flushed or deleted' }]);
  await clock.advance(30_000);
  t.is(rel().length, 3, 'nothing found, no sync');
  t.is(lines.filter((l) => l.msg === 'repaired kernel rules someone else changed').length, 2);
  await runner.stop();
});

test('watchDrift: started and waited for before the first sync, each report brings a sync at once, stopped with the runner', async (t) => {
  const { runner, clock, backend, rel, synced } = repairSetup({ minSyncPeriodMs: 0 });
  let open!: () => void;
  backend.readyGate = new Promise((r) => { open = r; });
  const starting = runner.start();
  await clock.advance(5000);
  t.is(rel().length, 0, 'the first sync waits for the watch');
  open();
  await starting;
  t.is(rel().length, 1);
  backend.found({ damage: [{ what: 'element', object: 'ip kproxy service-ips { 10.96.0.10 . tcp . 80 }' }] });
  backend.onDrift!({ damage: [{ what: 'element', object: 'ip kproxy service-ips { 10.96.0.10 . tcp . 80 }' }] });
  await clock.advance(1);
  t.deepEqual(rel()[1], { at: 5000, full: false });
  t.is(synced[1].result.repairs?.length, 1);
  await runner.stop();
  t.true(backend.watchStopped);
});

test('watchDrift: a watch that never gets ready holds the first sync up for watchReadyMs only', async (t) => {
  const { runner, clock, backend, rel } = repairSetup({ watchReadyMs: 2000 });
  backend.readyGate = new Promise(() => undefined);
  const starting = runner.start();
  await clock.advance(1999);
  t.is(rel().length, 0);
  await clock.advance(1);
  await starting;
  t.deepEqual(rel(), [{ at: 2000, full: true }]);
  await runner.stop();
});

test('a drift check that throws forces a full sync', async (t) => {
  const { runner, clock, backend, rel } = repairSetup();
  backend.checkDrift = async () => { throw new Error('iptables-save: cannot read'); };
  await runner.start();
  await clock.advance(30_000);
  t.deepEqual(rel()[1], { at: 30_000, full: true });
  await runner.stop();
});
