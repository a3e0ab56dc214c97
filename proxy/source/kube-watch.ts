// The client library's Watch, tuned for a long-running node agent:
// - asks for bookmarks, so a quiet resource still advances its
//   resourceVersion and a reconnect rarely needs a full relist;
// - asks the server to end each watch after a randomised 5-10 minutes (as
//   client-go does), so connections are renewed and rebalanced across API
//   servers;
// - an idle limit: a stream that carries nothing (not even a bookmark) for
//   that long is treated as dead and reopened from the last resourceVersion;
// - reports to its owner when a watch starts, is established, and carries
//   an event, and never lets an exception escape (the library would leave
//   it as an unhandled rejection).
import type { KubeConfig } from '@kubernetes/client-node';
// The library's module itself, not its index (which loads all its generated code: client-library.ts).
import { Watch } from '@kubernetes/client-node/dist/watch.js';

export interface WatchHooks {
  /** A watch request is about to be sent (the list before it, if any, has been fully delivered). */
  onStart(): void;
  /** The server answered 200 and the stream is open. */
  onEstablished(): void;
  /** One event arrived (ADDED, MODIFIED, DELETED, BOOKMARK or ERROR). */
  onEvent(type: string, object: unknown): void;
  /**
   * Optional: what is kept of an ADDED, MODIFIED or DELETED object (it must
   * keep metadata.name, namespace and resourceVersion), before the watch's
   * consumer sees it.
   */
  transform?(object: unknown): unknown;
}

export interface WatchTuning {
  /** Idle limit of an open stream, and time allowed to open one. */
  readonly idleTimeoutMs: number;
  /** Server-side watch duration is randomised in [min, 2*min) seconds. */
  readonly minWatchSeconds: number;
}

type Callback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;
type Done = (err: unknown) => void;

export class AgentWatch extends Watch {
  /** Set when the owner stops: no new watch is opened after that. */
  stopped = false;
  readonly #hooks: WatchHooks;
  readonly #minWatchSeconds: number;

  constructor(kc: KubeConfig, tuning: WatchTuning, hooks: WatchHooks) {
    super(kc);
    // The library keeps this private with a 30 s default; a node agent
    // wants it tied to how often the server sends something.
    Object.assign(this, { requestTimeoutMs: tuning.idleTimeoutMs });
    this.#hooks = hooks;
    this.#minWatchSeconds = tuning.minWatchSeconds;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: Callback,
    done: Done,
  ): Promise<AbortController> {
    const idle = new AbortController();
    idle.abort();
    if (this.stopped) return idle;
    let ended = false;
    const endOnce: Done = (err) => {
      if (ended) return;
      ended = true;
      done(err);
    };
    try {
      this.#hooks.onStart();
      const timeoutSeconds = Math.floor(this.#minWatchSeconds * (1 + Math.random()));
      const controller = await super.watch(
        path,
        { ...queryParams, allowWatchBookmarks: true, timeoutSeconds },
        (phase, obj, raw) => {
          this.#hooks.onEvent(phase, obj);
          const keep = this.#hooks.transform;
          const object = keep && (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') ? keep(obj) : obj;
          callback(phase, object, raw);
        },
        endOnce,
      );
      if (!ended) this.#hooks.onEstablished();
      return controller;
    } catch (err) {
      // e.g. credentials that cannot be obtained: report like any other failure
      endOnce(err);
      return idle;
    }
  }
}
