// A zone's upstreams and the policy that orders them: healthy upstreams
// first (sequential, round robin or random), down ones last, each tried in
// turn until one gives a usable answer or the zone's timeout runs out.
import type { Logger } from '../lib/log.ts';
import { Upstream, type UpstreamAddress, type UpstreamHooks } from './upstream.ts';
import { analyzeResponse, RCODE_REFUSED, RCODE_SERVFAIL, upstreamQuery, type ResponseInfo } from './wire.ts';

export type Policy = 'sequential' | 'round_robin' | 'random';

export interface ForwardOptions {
  readonly upstreams: readonly UpstreamAddress[];
  readonly policy: Policy;
  readonly forceTcp: boolean;
  readonly maxFails: number;
  readonly healthCheckMs: number;
  /** Overall time for one client query before it gets SERVFAIL. */
  readonly timeoutMs: number;
}

export interface ForwardHooks extends UpstreamHooks {
  onRequest(to: string): void;
  onResponse(to: string, rcode: number, seconds: number): void;
}

export interface Forwarded {
  readonly msg: Buffer;
  readonly info: ResponseInfo;
  readonly upstream: string;
}

export class Forwarder {
  readonly upstreams: readonly Upstream[];
  readonly opts: ForwardOptions;
  private readonly hooks: ForwardHooks;
  private readonly log: Logger;
  private next = 0;

  constructor(opts: ForwardOptions, log: Logger, hooks: ForwardHooks) {
    this.opts = opts;
    this.hooks = hooks;
    this.log = log;
    this.upstreams = opts.upstreams.map((a) => new Upstream(a, opts, log, hooks));
  }

  /** True when every upstream is down (serve stale without waiting). */
  get allDown(): boolean {
    return this.upstreams.every((u) => !u.healthy);
  }

  private order(): Upstream[] {
    const list = this.upstreams.slice();
    if (this.opts.policy === 'round_robin') {
      const start = this.next++ % list.length;
      list.push(...list.splice(0, start));
    } else if (this.opts.policy === 'random') {
      for (let i = list.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [list[i], list[j]] = [list[j], list[i]];
      }
    }
    return [...list.filter((u) => u.healthy), ...list.filter((u) => !u.healthy)];
  }

  /**
   * Resolves `question` upstream; undefined when no upstream gave a usable
   * answer in time. SERVFAIL/REFUSED/malformed answers move on to the next
   * upstream; the last such answer is returned if nothing better came.
   */
  async resolve(question: Buffer, dnssecOk: boolean, checkingDisabled: boolean): Promise<Forwarded | undefined> {
    const query = upstreamQuery(question, dnssecOk, checkingDisabled);
    const list = this.order();
    const deadline = Date.now() + this.opts.timeoutMs;
    // Each attempt gets an equal share of the time, so a silent upstream
    // leaves time for the others.
    const share = Math.max(50, Math.floor(this.opts.timeoutMs / list.length));
    let fallback: Forwarded | undefined;
    for (const u of list) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const started = performance.now();
      this.hooks.onRequest(u.label);
      try {
        const msg = await u.exchange(query, question, Math.min(share, left));
        const info = analyzeResponse(msg, question);
        const secs = (performance.now() - started) / 1000;
        if (!info) {
          this.hooks.onResponse(u.label, -1, secs);
          u.failed();
          this.log.debug({ upstream: u.label }, 'malformed answer from upstream');
          continue;
        }
        this.hooks.onResponse(u.label, info.rcode, secs);
        u.succeeded();
        const answer = { msg, info, upstream: u.label };
        if (info.rcode === RCODE_SERVFAIL || info.rcode === RCODE_REFUSED || info.truncated) {
          fallback = answer;
          continue;
        }
        return answer;
      } catch (e) {
        u.failed();
        this.log.debug({ upstream: u.label, err: (e as Error).message }, 'upstream exchange failed');
      }
    }
    return fallback;
  }

  close(): void {
    for (const u of this.upstreams) u.close();
  }
}
