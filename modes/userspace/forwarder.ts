// The userspace forwarder as kproxy runs it: one worker process per core,
// each an Engine with its own listeners on the same addresses
// (SO_REUSEPORT), so the kernel spreads connections over the cores and no
// single JavaScript thread carries the traffic. This supervisor validates
// each table, places listeners on workers, gathers their results and
// counters, restarts a worker that died, and runs the restart handover.
import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { KproxyError } from '../../lib/errors.ts';
import { compactHeap } from '../../lib/heap.ts';
import type { Logger } from '../../lib/log.ts';
import type { ApplyResult, EndpointReport, EngineSnapshot, ListenerReport } from './engine.ts';
import { boundSockets, enableMigrateReq, procKey, socketInodes, successorReady } from './handover.ts';
import { fdModule, type FdModule } from './fd-channel.ts';
import { relayModule } from './native-tcp.ts';
import { counterNames, defaultEngineOptions, newCounters, type EngineOptions, type ServiceCounters } from './listener-state.ts';
import { WORKER_CONFIG_ENV, type FromWorker, type Request, type ToWorker, type WorkerConfig } from './messages.ts';
import { LISTENER_SHARE, openFileLimit, replicasFor, workersOf } from './placement.ts';
import { listenerKey, refusesAll, validateTable, type ForwarderTable, type ListenerSpec } from './table.ts';

export interface ForwarderOptions {
  /** Worker processes (default: one per core). */
  readonly workers?: number;
  readonly engine?: Partial<EngineOptions>;
  readonly logLevel?: string;
  /** Listeners one worker may hold (default: a share of its open-file limit). */
  readonly listenerBudget?: number;
  /** Set net.ipv4.tcp_migrate_req=1 in this network namespace (default true; tests on the host's loopback say false). */
  readonly migrateReq?: boolean;
  /**
   * Open each TCP listener once here and pass it to every worker, so they
   * share one accept queue (default true with the native relay); false:
   * each worker binds its own socket (SO_REUSEPORT splits connections
   * between them by a hash).
   */
  readonly shareListeners?: boolean;
}

/** The workers' engine snapshots summed; an endpoint counts as ejected when any worker skips it. */
export interface ForwarderSnapshot extends Omit<EngineSnapshot, 'relay'> {
  readonly workers: number;
  readonly relay: string;
}

const workerScript = fileURLToPath(new URL('./worker.ts', import.meta.url));
/** Listening sockets opened and passed at a time. */
const PASS_BATCH = 500;

interface Pending {
  resolve(m: FromWorker): void;
  reject(e: Error): void;
}

class Worker {
  readonly index: number;
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  /** This end of the descriptor channel (the worker holds the other as fd 4), or -1. */
  readonly channel: number;
  /** TCP listeners the worker has open, by key (so their sockets are passed once). */
  tcpOpen = new Set<string>();
  readonly #pending = new Map<number, Pending>();
  #seq = 0;
  exited = false;

  constructor(index: number, config: WorkerConfig, fds: FdModule | undefined, onExit: (w: Worker, code: number | null, signal: string | null) => void) {
    this.index = index;
    const pair = fds?.socketPair();
    this.channel = pair ? pair[0] : -1;
    this.child = fork(workerScript, [], {
      env: { ...process.env, [WORKER_CONFIG_ENV]: JSON.stringify({ ...config, fdChannel: pair !== undefined } satisfies WorkerConfig) },
      serialization: 'advanced',
      stdio: pair ? ['ignore', 'inherit', 'inherit', 'ipc', pair[1]] : ['ignore', 'inherit', 'inherit', 'ipc'],
      // kproxy's own memory flags (a small young generation), nothing else of its command line.
      execArgv: process.execArgv.filter((a) => /^--max-semi-space-size=/.test(a)),
    });
    // The child holds its end now.
    if (pair) fds!.closeFd(pair[1]);
    this.ready = new Promise((resolve, reject) => {
      const early = (code: number | null) => reject(new KproxyError('KPROXY_FORWARDER_FAILED', `forwarder worker ${index} exited at start (${code})`));
      this.child.once('exit', early);
      this.child.once('message', (m: FromWorker) => {
        this.child.off('exit', early);
        if (m.type === 'ready') resolve();
        else reject(new KproxyError('KPROXY_FORWARDER_FAILED', `forwarder worker ${index} said ${m.type} first`));
      });
    });
    this.child.on('message', (m: FromWorker) => {
      if (m.type === 'ready') return;
      const p = this.#pending.get(m.seq);
      if (p === undefined) return;
      this.#pending.delete(m.seq);
      if (m.type === 'error') p.reject(new KproxyError('KPROXY_FORWARDER_FAILED', `forwarder worker ${index}: ${m.message}`));
      else p.resolve(m);
    });
    // A send to a worker that is exiting fails through the send callback; nothing else to report here.
    this.child.on('error', () => {});
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      if (this.channel >= 0) fds!.closeFd(this.channel);
      for (const p of this.#pending.values()) p.reject(new KproxyError('KPROXY_FORWARDER_FAILED', `forwarder worker ${index} exited (${code ?? signal})`));
      this.#pending.clear();
      onExit(this, code, signal);
    });
  }

  request<T extends FromWorker>(m: Request): Promise<T> {
    if (this.exited) return Promise.reject(new KproxyError('KPROXY_FORWARDER_FAILED', `forwarder worker ${this.index} is not running`));
    const seq = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(seq, { resolve: resolve as (m: FromWorker) => void, reject });
      this.child.send({ ...m, seq } as ToWorker, (err) => {
        if (err === null || !this.#pending.delete(seq)) return;
        reject(new KproxyError('KPROXY_FORWARDER_FAILED', `forwarder worker ${this.index}: ${err.message}`));
      });
    });
  }
}

/** Listeners that could not be opened are tried again this often. */
const RETRY_FAILED_MS = 10_000;

export class Forwarder {
  readonly #log: Logger;
  readonly #config: (index: number) => Omit<WorkerConfig, 'fdChannel'>;
  readonly #budget: number;
  readonly #backlog: number;
  /** Set when TCP listeners are opened here and passed to the workers (one accept queue shared by all). */
  readonly #fds: FdModule | undefined;
  readonly #workers: Worker[] = [];
  /** The table served, by listener key (validated copies). */
  readonly #listeners = new Map<string, ListenerSpec>();
  #clusterSources: readonly string[] = [];
  /** How many workers open each listener (all of them unless the open-file limit says otherwise). */
  #replicas = 0;
  /** The workers each listener was given to. */
  readonly #on = new Map<string, readonly number[]>();
  /** Listeners no worker could open, with the reason; tried again every RETRY_FAILED_MS. */
  #failed = new Map<string, string>();
  #retry: NodeJS.Timeout | undefined;
  /** Changes of the table run one at a time (a retry may come between two syncs). */
  #busy: Promise<unknown> = Promise.resolve();
  #stopping = false;

  private constructor(log: Logger, opts: ForwarderOptions) {
    this.#log = log;
    this.#config = (index) => ({ options: opts.engine ?? {}, logLevel: opts.logLevel ?? log.level, index });
    this.#budget = opts.listenerBudget ?? Math.floor(openFileLimit() * LISTENER_SHARE);
    this.#backlog = opts.engine?.backlog ?? defaultEngineOptions.backlog;
    const relay = opts.engine?.relay ?? 'auto';
    const fds = fdModule();
    const native = relay !== 'node' && !(relayModule() instanceof Error) && !(fds instanceof Error);
    this.#fds = native && opts.shareListeners !== false && (opts.engine?.reusePort ?? true) ? fds as FdModule : undefined;
  }

  /** Starts the workers (none of them listens yet). */
  static async start(log: Logger, opts: ForwarderOptions = {}): Promise<Forwarder> {
    const f = new Forwarder(log, opts);
    const migrate = opts.migrateReq === false ? undefined : enableMigrateReq();
    if (migrate !== undefined) log.warn({ err: migrate }, 'could not set net.ipv4.tcp_migrate_req=1: connections queued on a listener are reset when kproxy restarts');
    const n = opts.workers || availableParallelism();
    if (!Number.isInteger(n) || n < 1) throw new KproxyError('KPROXY_BAD_CONFIG', `forwarder workers must be a positive integer (got ${n})`);
    for (let i = 0; i < n; i++) f.#workers.push(f.#spawn(i));
    try {
      await Promise.all(f.#workers.map((w) => w.ready));
    } catch (e) {
      await f.stop(0);
      throw e;
    }
    return f;
  }

  get workers(): number {
    return this.#workers.length;
  }

  /** The worker processes' ids (for tests and `explain`). */
  get pids(): number[] {
    return this.#workers.map((w) => w.child.pid ?? 0);
  }

  /** The table served now. */
  get table(): ForwarderTable {
    return { clusterSources: this.#clusterSources, listeners: [...this.#listeners.values()] };
  }

  /** Listeners no worker could open now, with the reason (they are tried again every 10 s). */
  get failed(): ReadonlyMap<string, string> {
    return this.#failed;
  }

  /**
   * Validates `input` and makes every worker serve it in place of what it
   * served. Resolves with the listeners no worker could open; rejects
   * (changing nothing) on an invalid table.
   */
  async apply(input: unknown): Promise<ApplyResult> {
    const table = validateTable(input);
    return this.#serial(() => this.#applyAll(table));
  }

  /**
   * Changes part of the table: `upsert` listeners are opened or updated,
   * `remove` keys closed, the rest stays untouched. Validated like a table
   * (an invalid delta changes nothing).
   */
  async update(input: { clusterSources?: unknown; upsert: unknown; remove: unknown }): Promise<ApplyResult> {
    const clusterSources = input.clusterSources ?? this.#clusterSources;
    const checked = validateTable({ clusterSources, listeners: input.upsert });
    const remove = Array.isArray(input.remove) && input.remove.every((k) => typeof k === 'string') ? input.remove as string[] : undefined;
    if (remove === undefined) throw new KproxyError('KPROXY_FORWARDER_TABLE_INVALID', 'forwarder delta: remove must be a list of listener keys');
    return this.#serial(() => this.#update(input.clusterSources === undefined ? undefined : checked.clusterSources, checked.listeners, remove));
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#busy.then(fn, fn);
    this.#busy = run.catch(() => undefined);
    return run;
  }

  async #applyAll(table: ForwarderTable): Promise<ApplyResult> {
    const n = this.#workers.length;
    const replicas = replicasFor(table.listeners.length, n, this.#budget);
    const parts = Array.from({ length: n }, () => [] as ListenerSpec[]);
    const on = new Map<string, readonly number[]>();
    for (const l of table.listeners) {
      const ws = workersOf(l, n, replicas);
      on.set(listenerKey(l), ws);
      for (const w of ws) parts[w].push(l);
    }
    const failed = new Map<string, string>();
    if (this.#fds !== undefined) await this.#passListeners(parts, failed);
    const sent = parts.map((p) => (failed.size === 0 ? p : p.filter((l) => !failed.has(listenerKey(l)))));
    const results = await Promise.all(this.#workers.map((w, i) => w.request<Extract<FromWorker, { type: 'applied' }>>({
      type: 'apply', table: { clusterSources: table.clusterSources, listeners: sent[i] },
    })));
    this.#listeners.clear();
    for (const l of table.listeners) this.#listeners.set(listenerKey(l), l);
    this.#clusterSources = table.clusterSources;
    this.#replicas = replicas;
    this.#on.clear();
    for (const [k, ws] of on) this.#on.set(k, ws);
    results.forEach((r, i) => {
      for (const f of r.result.failed) failed.set(f.key, f.error);
      this.#workers[i].tcpOpen = new Set(sent[i].filter((l) => l.protocol === 'TCP' && !failed.has(listenerKey(l))).map(listenerKey));
    });
    this.#setFailed(failed, [...this.#listeners.keys()], true);
    if (table.listeners.length >= 2000) compactHeap();
    return { failed: [...failed].map(([key, error]) => ({ key, error })), listeners: table.listeners.length - failed.size };
  }

  async #update(clusterSources: readonly string[] | undefined, upsert: readonly ListenerSpec[], remove: readonly string[]): Promise<ApplyResult> {
    const n = this.#workers.length;
    const upserted = new Set(upsert.map(listenerKey));
    const gone = remove.filter((k) => this.#listeners.has(k) && !upserted.has(k));
    const size = this.#listeners.size - gone.length + upsert.filter((l) => !this.#listeners.has(listenerKey(l))).length;
    // Crossing the open-file budget moves every listener: send the whole table.
    if (replicasFor(size, n, this.#budget) !== this.#replicas) {
      const next = new Map(this.#listeners);
      for (const k of gone) next.delete(k);
      for (const l of upsert) next.set(listenerKey(l), l);
      return this.#applyAll({ clusterSources: clusterSources ?? this.#clusterSources, listeners: [...next.values()] });
    }
    const ups = Array.from({ length: n }, () => [] as ListenerSpec[]);
    const rms = Array.from({ length: n }, () => [] as string[]);
    for (const k of gone) for (const w of this.#on.get(k) ?? []) rms[w].push(k);
    const on = new Map<string, readonly number[]>();
    for (const l of upsert) {
      const key = listenerKey(l);
      const ws = workersOf(l, n, this.#replicas);
      on.set(key, ws);
      for (const w of this.#on.get(key) ?? []) if (!ws.includes(w)) rms[w].push(key);
      for (const w of ws) ups[w].push(l);
    }
    const failed = new Map<string, string>();
    if (this.#fds !== undefined) await this.#passListeners(ups, failed);
    const sent = ups.map((p) => (failed.size === 0 ? p : p.filter((l) => !failed.has(listenerKey(l)))));
    const results = await Promise.all(this.#workers.map((w, i) => {
      if (sent[i].length === 0 && rms[i].length === 0 && clusterSources === undefined) return undefined;
      return w.request<Extract<FromWorker, { type: 'applied' }>>({
        type: 'update', delta: { upsert: sent[i], remove: rms[i], ...(clusterSources ? { clusterSources } : {}) },
      });
    }));
    for (const k of gone) {
      this.#listeners.delete(k);
      this.#on.delete(k);
    }
    for (const l of upsert) this.#listeners.set(listenerKey(l), l);
    for (const [k, ws] of on) this.#on.set(k, ws);
    if (clusterSources !== undefined) this.#clusterSources = clusterSources;
    results.forEach((r, i) => {
      for (const f of r?.result.failed ?? []) failed.set(f.key, f.error);
      const open = this.#workers[i].tcpOpen;
      for (const k of rms[i]) open.delete(k);
      for (const l of sent[i]) if (l.protocol === 'TCP' && !failed.has(listenerKey(l))) open.add(listenerKey(l));
    });
    this.#setFailed(failed, [...gone, ...upserted], false);
    if (upsert.length >= 2000) compactHeap();
    return { failed: [...failed].map(([key, error]) => ({ key, error })), listeners: this.#listeners.size - this.#failed.size };
  }

  /**
   * Takes the bind failures of a change: `failed` for the keys it touched
   * (`touched`, or every key when `all`); says which are new and which
   * recovered, and keeps retrying the failed ones.
   */
  #setFailed(failed: ReadonlyMap<string, string>, touched: readonly string[], all: boolean): void {
    const before = this.#failed;
    const next = all ? new Map<string, string>() : new Map(before);
    if (!all) for (const k of touched) next.delete(k);
    for (const [k, e] of failed) if (this.#listeners.has(k)) next.set(k, e);
    const fresh = [...next].filter(([k, e]) => before.get(k) !== e);
    const recovered = [...before.keys()].filter((k) => !next.has(k) && this.#listeners.has(k));
    if (fresh.length > 0) {
      this.#log.warn({ count: fresh.length, listeners: Object.fromEntries(fresh.slice(0, 20)) },
        'could not open listeners (EADDRINUSE: another program holds the port; EADDRNOTAVAIL: not a local address): they are tried again every 10 s');
    }
    if (recovered.length > 0) this.#log.info({ count: recovered.length, listeners: recovered.slice(0, 20) }, 'listeners open now');
    this.#failed = next;
    if (next.size > 0 && this.#retry === undefined && !this.#stopping) {
      this.#retry = setInterval(() => this.#retryFailed(), RETRY_FAILED_MS);
      this.#retry.unref();
    } else if (next.size === 0 && this.#retry !== undefined) {
      clearInterval(this.#retry);
      this.#retry = undefined;
    }
  }

  #retryFailed(): void {
    if (this.#stopping || this.#failed.size === 0) return;
    const specs = [...this.#failed.keys()].map((k) => this.#listeners.get(k)).filter((l): l is ListenerSpec => l !== undefined);
    this.#serial(() => this.#update(undefined, specs, [])).catch((e: Error) => this.#log.warn({ err: e.message }, 'retrying listeners failed'));
  }

  /**
   * Opens each TCP listener new to some worker once and passes it to every
   * worker that needs it, in batches (the supervisor never holds more than
   * a batch of them: its open-file limit is the workers' too).
   */
  async #passListeners(parts: readonly (readonly ListenerSpec[])[], failed: Map<string, string>): Promise<void> {
    const fds = this.#fds!;
    const needed = new Map<string, { spec: ListenerSpec; workers: number[] }>();
    parts.forEach((part, i) => {
      for (const l of part) {
        const key = listenerKey(l);
        if (l.protocol !== 'TCP' || this.#workers[i].tcpOpen.has(key)) continue;
        let n = needed.get(key);
        if (n === undefined) needed.set(key, (n = { spec: l, workers: [] }));
        n.workers.push(i);
      }
    });
    const entries = [...needed];
    for (let at = 0; at < entries.length; at += PASS_BATCH) {
      const opened = new Map<string, number>();
      try {
        for (const [key, { spec }] of entries.slice(at, at + PASS_BATCH)) {
          try {
            opened.set(key, fds.openTcpListener(spec.ip, spec.port, this.#backlog, true));
          } catch (e) {
            failed.set(key, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
          }
        }
        await Promise.all(this.#workers.map(async (w, i) => {
          const keys = [...opened.keys()].filter((k) => needed.get(k)!.workers.includes(i));
          if (keys.length === 0) return;
          fds.sendFds(w.channel, keys.map((k) => opened.get(k)!));
          await w.request({ type: 'adopt', keys });
        }));
      } finally {
        // The workers hold their copies now; the supervisor keeps none.
        for (const fd of opened.values()) fds.closeFd(fd);
      }
    }
  }

  /**
   * Counters and endpoint states summed over the workers; `endpoints: false`
   * leaves out the per-endpoint list (metrics need only the counters).
   */
  async snapshot(opts: { endpoints?: boolean } = {}): Promise<ForwarderSnapshot> {
    const endpoints = opts.endpoints ?? true;
    const snaps = await Promise.all(this.#workers.filter((w) => !w.exited).map((w) => w.request<Extract<FromWorker, { type: 'snapshot' }>>({ type: 'snapshot', endpoints }).then((m) => m.snapshot)));
    return mergeSnapshots(snaps, this.#workers.length);
  }

  /** The live state of these listeners, summed over the workers (explain). */
  async describe(keys: readonly string[]): Promise<ListenerReport[]> {
    const parts = await Promise.all(this.#workers.filter((w) => !w.exited).map((w) => w.request<Extract<FromWorker, { type: 'described' }>>({ type: 'describe', keys }).then((m) => m.listeners)));
    return mergeReports(parts.flat());
  }

  /** Listening sockets the table calls for, summed over the workers (a drift check compares it with snapshot().listening). */
  expectedListening(): number {
    let n = 0;
    for (const [k, l] of this.#listeners) {
      if (this.#failed.has(k) || (l.protocol === 'UDP' && refusesAll(l))) continue;
      n += this.#on.get(k)?.length ?? 0;
    }
    return n;
  }

  /**
   * The restart handover, run on SIGTERM: keeps accepting until a successor
   * has bound every listener of this table (or `waitMs` passes), then stops
   * accepting and lets open connections finish for up to `drainMs`.
   */
  async handover(waitMs: number, drainMs: number): Promise<{ successor: boolean; waitedMs: number }> {
    const started = Date.now();
    const keys = this.#accepting();
    const ours = socketInodes([process.pid, ...this.pids]);
    let successor = false;
    // Nothing accepted here (stopped before its first sync, or an empty table): nothing to hand over.
    while (keys.length > 0 && Date.now() - started < waitMs) {
      if (successorReady(keys, boundSockets(), ours)) {
        successor = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const waitedMs = Date.now() - started;
    this.#log.info({ successor, waitedMs }, successor ? 'a successor listens on every address: handing over' : 'no successor bound every listener in time: stopping anyway');
    await this.stop(drainMs);
    return { successor, waitedMs };
  }

  /** Stops accepting, lets open connections finish for up to `graceMs`, and ends the workers. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    if (this.#retry !== undefined) clearInterval(this.#retry);
    this.#retry = undefined;
    const live = this.#workers.filter((w) => !w.exited);
    // Every worker stops accepting first, so no new connection lands on one that is already draining.
    await Promise.all(live.map((w) => w.request({ type: 'stop-accepting' }).catch(() => undefined)));
    await Promise.all(live.map(async (w) => {
      const exited = new Promise((r) => w.child.once('exit', r));
      await w.request({ type: 'stop', graceMs }).catch(() => undefined);
      const timer = setTimeout(() => w.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }));
  }

  /** The listeners this kproxy accepts on, in boundSockets()' spelling. */
  #accepting(): string[] {
    const keys = new Set<string>();
    for (const [k, l] of this.#listeners) {
      if (this.#failed.has(k) || (l.protocol === 'UDP' && refusesAll(l))) continue;
      keys.add(procKey(l.protocol, l.ip, l.port));
    }
    return [...keys];
  }

  /** The part of the table worker `index` serves. */
  #partOf(index: number): ForwarderTable {
    const listeners: ListenerSpec[] = [];
    for (const [k, l] of this.#listeners) if (this.#on.get(k)?.includes(index)) listeners.push(l);
    return { clusterSources: this.#clusterSources, listeners };
  }

  #spawn(index: number): Worker {
    return new Worker(index, this.#config(index) as WorkerConfig, this.#fds, (w, code, signal) => {
      if (this.#stopping) return;
      this.#log.error({ worker: index, code, signal }, 'forwarder worker died; starting another');
      const fresh = this.#spawn(index);
      this.#workers[this.#workers.indexOf(w)] = fresh;
      fresh.ready
        // The replacement binds its own sockets (the supervisor keeps no copies to pass): they join each listener's SO_REUSEPORT group.
        .then(() => this.#serial(async () => {
          const part = this.#partOf(index);
          const r = await fresh.request<Extract<FromWorker, { type: 'applied' }>>({ type: 'apply', table: part });
          const bad = new Set(r.result.failed.map((f) => f.key));
          fresh.tcpOpen = new Set(part.listeners.filter((l) => l.protocol === 'TCP' && !bad.has(listenerKey(l))).map(listenerKey));
        }))
        .catch((e: Error) => this.#log.error({ worker: index, err: e.message }, 'restarted forwarder worker could not take the table'));
    });
  }
}

/** Reports of one listener from several workers, as one. */
export function mergeReports(reports: readonly ListenerReport[]): ListenerReport[] {
  const byKey = new Map<string, ListenerReport>();
  for (const r of reports) {
    const prev = byKey.get(r.key);
    if (prev === undefined) {
      byKey.set(r.key, r);
      continue;
    }
    const eps = new Map(prev.endpoints.map((e) => [e.key, e]));
    for (const e of r.endpoints) {
      const p = eps.get(e.key);
      eps.set(e.key, p === undefined ? e : {
        key: e.key, open: p.open + e.open, inRoutes: p.inRoutes || e.inRoutes, ejected: p.ejected || e.ejected,
        ejectedForMs: Math.max(p.ejectedForMs, e.ejectedForMs), failures: Math.max(p.failures, e.failures), lastError: p.lastError || e.lastError,
      });
    }
    byKey.set(r.key, {
      key: r.key, accepting: prev.accepting || r.accepting, endpoints: [...eps.values()].sort((a, b) => (a.key < b.key ? -1 : 1)),
      connecting: prev.connecting + r.connecting, held: prev.held + r.held,
    });
  }
  return [...byKey.values()];
}

export function mergeSnapshots(snaps: readonly EngineSnapshot[], workers: number): ForwarderSnapshot {
  const services: Record<string, ServiceCounters> = {};
  const ejected: Record<string, number> = {};
  const endpoints = new Map<string, EndpointReport>();
  let listening = 0;
  let open = 0;
  let buffered = 0;
  for (const s of snaps) {
    listening += s.listening;
    open += s.open;
    buffered += s.buffered;
    for (const [k, c] of Object.entries(s.services)) {
      const sum = (services[k] ??= newCounters());
      for (const n of counterNames) sum[n] += c[n];
    }
    for (const [k, n] of Object.entries(s.ejected)) ejected[k] = Math.max(ejected[k] ?? 0, n);
    for (const e of s.endpoints) {
      const prev = endpoints.get(e.key);
      endpoints.set(e.key, prev === undefined ? e : {
        key: e.key, active: prev.active + e.active, ejected: prev.ejected || e.ejected, ejectedForMs: Math.max(prev.ejectedForMs, e.ejectedForMs),
        failures: Math.max(prev.failures, e.failures), lastError: prev.lastError || e.lastError, uses: Math.max(prev.uses, e.uses),
      });
    }
  }
  return { services, ejected, endpoints: [...endpoints.values()], listening, open, buffered, workers, relay: [...new Set(snaps.map((s) => s.relay))].join(',') };
}
