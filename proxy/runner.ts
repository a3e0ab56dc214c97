// Decides when to sync, in the manner of kube-proxy's BoundedFrequencyRunner:
//  - requests coalesce: any number of request() calls while a sync is due or
//    running lead to one more sync;
//  - syncs are rate-limited by a token bucket refilled once per
//    minSyncPeriod, holding `burstSyncs` tokens (kube-proxy uses 2), so a
//    lone change is applied at once and a storm at most once per minSyncPeriod;
//  - syncs never overlap;
//  - a failed sync is retried with exponential backoff (from retryInitialMs
//    up to syncPeriod) and the retry is a full sync (tracker.requestFull());
//  - every syncPeriod, backend.checkDrift() looks for changes someone else
//    made to what kproxy owns, beside syncs and never holding one up; what
//    it finds (and what backend.watchDrift() reports as it happens) is
//    repaired by the next sync, a full one only when the backend says the
//    damage is too broad or unknown; repairs are logged once applied;
//  - a full sync runs at least every fullSyncPeriod (one hour) regardless.
// The clock is injected so tests drive time by hand.
import type { Backend, DriftReport, DriftWatch } from '../modes/backend.ts';
import { syncBackend, type SyncResult } from '../modes/sync.ts';
import type { Logger } from '../lib/log.ts';
import type { Changes, NodeState, StaleUdpEndpoint } from './model.ts';
import type { ServiceTracker } from './tracker-api.ts';
import { Backoff } from '../lib/backoff.ts';

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface RunnerOptions {
  readonly minSyncPeriodMs: number;
  readonly syncPeriodMs: number;
  /** Longest time between full syncs (kube-proxy: one hour). */
  readonly fullSyncPeriodMs?: number;
  /** Syncs allowed back to back before minSyncPeriod applies (kube-proxy: 2). */
  readonly burstSyncs?: number;
  /** First retry delay after a failure; doubles up to syncPeriod. */
  readonly retryInitialMs?: number;
  /** Longest wait for backend.watchDrift() to be ready before the first sync (default 10 s, at most syncPeriod). */
  readonly watchReadyMs?: number;
}

/** What one sync did, for health, metrics and the healthCheckNodePort servers. */
export interface SyncReport {
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly ok: boolean;
  readonly full: boolean;
  readonly result: SyncResult;
  readonly state: NodeState;
  readonly changes: Changes;
  readonly triggerTimes: readonly number[];
  /** Earliest time of a change that is still not applied (arrived during the sync, or the sync failed). */
  readonly pendingSince?: number;
}

export interface SyncListener {
  /** A change was queued while none was pending (health: start the staleness clock). */
  onQueued?(at: number): void;
  onSynced?(report: SyncReport): void;
  onSyncFailed?(report: SyncReport): void;
}

export interface RunnerDeps {
  readonly tracker: ServiceTracker;
  readonly backend: Backend;
  readonly log: Logger;
  readonly clock?: Clock;
  /** Run after each successful sync: conntrack cleanup of UDP flows to removed endpoints. */
  readonly afterSync?: (changes: Changes) => Promise<void>;
  readonly listeners?: readonly SyncListener[];
}

const hour = 3_600_000;

export class Runner {
  private readonly deps: RunnerDeps;
  private readonly opts: RunnerOptions;
  private readonly clock: Clock;
  private readonly minMs: number;
  private readonly periodMs: number;
  private readonly fullPeriodMs: number;
  private readonly burst: number;
  private readonly retryInitialMs: number;

  private started = false;
  private stopped = false;
  private requested = false;
  private queuedAt: number | undefined;
  private busy: Promise<void> | undefined;
  /**
   * A drift check under way. It runs beside syncs, never in their way: on a
   * large table even a cheap kernel read can take a while, and a change must
   * not wait for it.
   */
  private checking: Promise<void> | undefined;
  private tokens: number;
  private lastRefill = 0;
  private retryAt: number | undefined;
  /** Retry delays after failed syncs (no jitter: one node's retries need no spreading). */
  private readonly backoff: Backoff;
  private nextDriftCheck = 0;
  private lastFull = 0;
  private timer: unknown;
  private timerAt: number | undefined;
  private syncCount = 0;
  private watch: DriftWatch | undefined;
  /**
   * UDP flows a failed sync should have cleared: the snapshot consumed them
   * and the full retry does not bring them back, so they are owed to the
   * next successful sync's conntrack cleanup.
   */
  private owedUdp: Pick<Changes, 'staleUdpEndpoints' | 'staleUdpServiceIPs'> | undefined;
  /** Refused service ports already logged (port and reason), so each is logged once. */
  private readonly refusedSeen = new Set<string>();

  constructor(opts: RunnerOptions, deps: RunnerDeps) {
    this.deps = deps;
    this.opts = opts;
    this.clock = deps.clock ?? systemClock;
    this.minMs = opts.minSyncPeriodMs;
    this.periodMs = opts.syncPeriodMs;
    this.fullPeriodMs = opts.fullSyncPeriodMs ?? hour;
    this.burst = Math.max(1, opts.burstSyncs ?? 2);
    this.retryInitialMs = Math.min(opts.retryInitialMs ?? Math.max(1000, opts.minSyncPeriodMs), opts.syncPeriodMs);
    this.backoff = new Backoff(Math.max(1, this.retryInitialMs), Math.max(1, this.retryInitialMs, this.periodMs), 0);
    this.tokens = this.burst;
  }

  /** Number of syncs attempted so far. */
  get syncs(): number {
    return this.syncCount;
  }

  /**
   * Runs the first (full) sync at once, then keeps the schedule. Resolves
   * with the first sync's report; a failed first sync is retried like any other.
   */
  async start(): Promise<SyncReport> {
    if (this.started) throw new Error('runner already started');
    this.started = true;
    await this.startWatch();
    const now = this.clock.now();
    this.lastRefill = now;
    this.nextDriftCheck = now + this.periodMs;
    this.lastFull = now;
    this.deps.tracker.requestFull();
    // The first sync is a queued change like any other: health counts its
    // wait (and its failed retries) from now.
    this.queuedAt = now;
    for (const l of this.deps.listeners ?? []) l.onQueued?.(now);
    let report!: SyncReport;
    this.tokens -= 1;
    this.busy = this.sync().then((r) => { report = r; });
    await this.busy;
    this.busy = undefined;
    this.schedule();
    return report;
  }

  /** A Service, EndpointSlice or Node changed: sync soon. */
  request(): void {
    if (this.stopped) return;
    if (this.queuedAt === undefined) {
      this.queuedAt = this.clock.now();
      for (const l of this.deps.listeners ?? []) l.onQueued?.(this.queuedAt);
    }
    this.requested = true;
    if (this.started) this.schedule();
  }

  /** Stops scheduling and watching; waits for a sync in progress. Rules stay as they are. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await Promise.all([this.busy, this.checking, this.watch?.stop()]);
  }

  /**
   * Starts the backend's watch for changes made by others, and waits
   * (bounded) until it sees every change: what happens before is then
   * covered by the first, full, sync.
   */
  private async startWatch(): Promise<void> {
    if (!this.deps.backend.watchDrift) return;
    try {
      this.watch = this.deps.backend.watchDrift((r) => this.onDrift(r, 'watch'));
    } catch (err) {
      this.deps.log.warn({ err }, 'could not watch the dataplane for changes; the periodic check goes on');
      return;
    }
    const limit = Math.min(this.periodMs, this.opts.watchReadyMs ?? 10_000);
    let timer: unknown;
    const timeout = new Promise<'timeout'>((r) => { timer = this.clock.setTimeout(() => r('timeout'), limit); });
    const outcome = await Promise.race([this.watch.ready.then(() => 'ready' as const), timeout]);
    this.clock.clearTimeout(timer);
    if (outcome === 'timeout') this.deps.log.warn({ waitedMs: limit }, 'the dataplane watch is not ready yet; syncing without waiting for it');
  }

  /** A drift check or the watch found changes made by others (already queued in the backend). */
  private onDrift(report: DriftReport, source: 'check' | 'watch'): void {
    if (this.stopped || (report.damage.length === 0 && report.full === undefined)) return;
    const shown = report.damage.slice(0, 20).map((d) => `${d.what} ${d.object}`);
    this.deps.log.info({ source, found: shown, more: Math.max(0, report.damage.length - shown.length), full: report.full }, 'kernel rules changed behind kproxy\'s back; repairing');
    if (report.full !== undefined) this.deps.tracker.requestFull();
    this.requested = true;
    if (this.started) this.schedule();
  }

  private refill(now: number): void {
    if (this.minMs <= 0) {
      this.tokens = this.burst;
    } else {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.lastRefill) / this.minMs);
    }
    this.lastRefill = now;
  }

  /** When the next token is available. */
  private tokenAt(now: number): number {
    this.refill(now);
    if (this.tokens >= 1) return now;
    return now + Math.ceil((1 - this.tokens) * this.minMs);
  }

  private schedule(): void {
    if (this.stopped || this.busy) return;
    const now = this.clock.now();
    let runAt = Infinity;
    if (this.requested) runAt = this.tokenAt(now);
    else if (this.retryAt !== undefined) runAt = Math.max(this.retryAt, this.tokenAt(now));
    const at = Math.min(runAt, this.nextDriftCheck, this.lastFull + this.fullPeriodMs);
    if (this.timerAt === at) return;
    this.clearTimer();
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => this.wake(), Math.max(0, at - now));
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = undefined;
  }

  private wake(): void {
    this.timer = undefined;
    this.timerAt = undefined;
    if (this.stopped || this.busy) return;
    const now = this.clock.now();
    if (now >= this.lastFull + this.fullPeriodMs) {
      this.deps.log.info('periodic full resync');
      this.deps.tracker.requestFull();
      this.requested = true;
      this.lastFull = now; // counted from here even if this sync fails; failures force full anyway
    }
    if (this.retryAt !== undefined && now >= this.retryAt) {
      this.retryAt = undefined;
      this.requested = true;
    }
    if (this.requested && this.tokenAt(now) <= now) {
      this.requested = false;
      this.tokens -= 1;
      this.busy = this.sync().then(() => undefined, (err: unknown) => {
        // Only a bug gets here (backend errors are results); try again in full.
        this.deps.log.error({ err }, 'sync crashed');
        this.deps.tracker.requestFull();
        this.retryAt = this.clock.now() + this.backoff.next();
      });
    }
    if (!this.busy && !this.checking && now >= this.nextDriftCheck) {
      this.nextDriftCheck = now + this.periodMs;
      this.checking = this.checkDrift().finally(() => {
        this.checking = undefined;
        this.schedule();
      });
    }
    if (this.busy) {
      void this.busy.finally(() => {
        this.busy = undefined;
        this.schedule();
      });
    } else {
      this.schedule();
    }
  }

  private async checkDrift(): Promise<void> {
    const backend = this.deps.backend;
    if (backend.checkDrift) {
      let report: DriftReport;
      try {
        report = await backend.checkDrift();
      } catch (err) {
        this.deps.log.warn({ err }, 'drift check failed; forcing a full sync');
        report = { damage: [], full: 'the drift check failed' };
      }
      this.onDrift(report, 'check');
      return;
    }
    const syncsBefore = this.syncCount;
    let drifted: boolean;
    try {
      drifted = await this.deps.backend.drifted?.() ?? false;
    } catch (err) {
      this.deps.log.warn({ err }, 'drift check failed; forcing a full sync');
      drifted = true;
    }
    // A sync that ran meanwhile may have rebuilt what the check looked at;
    // its verdict is stale, and the next check will see real drift.
    if (this.syncCount !== syncsBefore || this.busy) return;
    if (drifted) {
      if (!(this.stopped)) this.deps.log.warn('kernel rules changed behind kproxy\'s back; forcing a full sync');
      this.deps.tracker.requestFull();
      this.requested = true;
      this.schedule();
    }
  }

  private withOwedUdp(changes: Changes): Changes {
    const owed = this.owedUdp;
    if (!owed || (owed.staleUdpEndpoints.length === 0 && owed.staleUdpServiceIPs.length === 0)) return changes;
    const staleUdpEndpoints: StaleUdpEndpoint[] = [...owed.staleUdpEndpoints, ...changes.staleUdpEndpoints];
    return { ...changes, staleUdpEndpoints, staleUdpServiceIPs: [...owed.staleUdpServiceIPs, ...changes.staleUdpServiceIPs] };
  }

  private async sync(): Promise<SyncReport> {
    this.syncCount++;
    const { tracker, backend, log } = this.deps;
    const startedAt = this.clock.now();
    const queuedBefore = this.queuedAt;
    this.queuedAt = undefined;
    const snap = tracker.snapshot();
    const { state, triggerTimes } = snap;
    const changes = this.withOwedUdp(snap.changes);
    // Plan and apply, timed in one place for every mode.
    const result: SyncResult = await syncBackend(backend, state, changes);
    for (const r of result.refused ?? []) {
      const id = `${r.key}\u0000${r.reason}`;
      if (this.refusedSeen.has(id)) continue;
      if (this.refusedSeen.size >= 10_000) this.refusedSeen.clear();
      this.refusedSeen.add(id);
      log.warn({ servicePort: r.key, reason: r.reason }, 'service port left out of the dataplane: a value could not be written safely');
    }
    const finishedAt = this.clock.now();
    const ok = result.ok;
    if (ok) {
      if (changes.full || result.full) this.lastFull = startedAt;
      const repairs = result.repairs ?? [];
      if (repairs.length) {
        const shown = repairs.slice(0, 20).map((d) => `${d.what} ${d.object}`);
        log.warn({ repaired: shown, more: Math.max(0, repairs.length - shown.length), full: result.full }, 'repaired kernel rules someone else changed');
      }
      this.retryAt = undefined;
      this.backoff.reset();
      this.owedUdp = undefined;
      if (this.deps.afterSync) {
        try {
          await this.deps.afterSync(changes);
        } catch (err) {
          log.warn({ err }, 'clearing stale conntrack entries failed');
        }
      }
    } else {
      // The snapshot consumed the changes; a full sync brings them back.
      tracker.requestFull();
      this.owedUdp = { staleUdpEndpoints: changes.staleUdpEndpoints, staleUdpServiceIPs: changes.staleUdpServiceIPs };
      const retryInMs = this.backoff.next();
      this.retryAt = finishedAt + retryInMs;
      log.error({ err: result.error, retryInMs }, 'sync failed; retrying with a full sync');
      if (queuedBefore !== undefined) this.queuedAt = Math.min(queuedBefore, this.queuedAt ?? Infinity);
    }
    const report: SyncReport = {
      startedAt, finishedAt, ok, full: changes.full, result, state, changes, triggerTimes,
      pendingSince: this.queuedAt,
    };
    log.debug({ full: changes.full, changed: changes.services.size, ms: finishedAt - startedAt, size: result.size, renderMs: Math.round(result.renderMs), applyMs: Math.round(result.applyMs) }, 'synced');
    for (const l of this.deps.listeners ?? []) {
      try {
        if (ok) l.onSynced?.(report);
        else l.onSyncFailed?.(report);
      } catch (err) {
        log.warn({ err }, 'sync listener failed');
      }
    }
    return report;
  }
}
