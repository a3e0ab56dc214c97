// Keeps one long-lived child process running: starts it, restarts it with
// exponential backoff when it ends on its own, and ends it on stop(). A run
// that lasted `stableMs` resets the backoff, so a process that dies once a
// day restarts at once while one that dies at start-up is not respawned in
// a tight loop.
import { Backoff } from './backoff.ts';
import type { StreamChild, StreamExit } from './exec.ts';

export interface SupervisorTimers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: SupervisorTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface SupervisorOptions {
  /** Starts the process (called again for each restart). */
  start(): StreamChild;
  /** The process ended without stop(); `retryInMs` is when it is started again. */
  onExit?(exit: StreamExit, ranMs: number, retryInMs: number): void;
  /** First restart delay, doubling up to maxRetryMs. */
  readonly initialRetryMs: number;
  readonly maxRetryMs: number;
  /** A run this long resets the backoff (default 60 s). */
  readonly stableMs?: number;
  readonly timers?: SupervisorTimers;
}

export class Supervisor {
  private readonly opts: SupervisorOptions;
  private readonly timers: SupervisorTimers;
  private readonly backoff: Backoff;
  private child: StreamChild | undefined;
  private timer: unknown;
  private stopped = false;
  private starts = 0;

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
    this.timers = opts.timers ?? realTimers;
    this.backoff = new Backoff(opts.initialRetryMs, Math.max(opts.initialRetryMs, opts.maxRetryMs), 0);
  }

  /** The running process, if any. */
  get current(): StreamChild | undefined {
    return this.child;
  }

  /** How many times the process was started. */
  get startCount(): number {
    return this.starts;
  }

  start(): void {
    if (this.stopped || this.child || this.timer !== undefined) return;
    this.launch();
  }

  private launch(): void {
    this.timer = undefined;
    if (this.stopped) return;
    this.starts++;
    const startedAt = this.timers.now();
    const child = this.opts.start();
    this.child = child;
    void child.exited.then((exit) => {
      if (this.child === child) this.child = undefined;
      if (this.stopped) return;
      const ranMs = this.timers.now() - startedAt;
      if (ranMs >= (this.opts.stableMs ?? 60_000)) this.backoff.reset();
      const retryInMs = this.backoff.next();
      this.opts.onExit?.(exit, ranMs, retryInMs);
      this.timer = this.timers.setTimeout(() => this.launch(), retryInMs);
    });
  }

  /** Ends the process and starts no other. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    const c = this.child;
    this.child = undefined;
    if (c) await c.stop();
  }
}
