// Keeps one resource (Services, EndpointSlices or this Node) in step with
// the API server: the client library's ListWatch (list, then watch from the
// list's resourceVersion; relist on 410 Gone, which emits deletions only for
// objects really gone) plus what it lacks for a node agent: it stops for
// good on any other error, so this restarts it with exponential backoff.
// A failure never clears what is known: an unreachable API server leaves
// the node with its last state.
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
// The library's module itself, not its index (which loads all its generated code: client-library.ts).
import { ListWatch } from '@kubernetes/client-node/dist/cache.js';
import type { Logger } from '../../lib/log.ts';
import { Backoff } from '../../lib/backoff.ts';
import { listAll } from './kube-list.ts';
import { AgentWatch } from './kube-watch.ts';

export interface ResourceSpec {
  /** For logs and events: Service, EndpointSlice or Node. */
  readonly kind: string;
  /** Collection path, e.g. /api/v1/services. */
  readonly path: string;
  readonly fieldSelector?: string;
  /**
   * Optional: what is kept of each listed or watched object (it must keep
   * metadata.name, namespace and resourceVersion). A consumer that needs a
   * few fields keeps memory low: the informer's cache holds what this returns.
   */
  readonly transform?: (object: KubernetesObject) => KubernetesObject;
}

export interface ReflectorHandlers<T> {
  upsert(obj: T): void;
  delete(obj: T): void;
  /** A (re)list has been delivered in full. */
  listed(): void;
  /** Optional: a list or watch failed; the last known state stays and a retry is scheduled. */
  failed?(err: unknown): void;
  /** Optional: a list or watch succeeded again after failures. */
  recovered?(): void;
}

export interface ReflectorTuning {
  readonly pageSize: number;
  readonly listTimeoutMs: number;
  readonly watchIdleTimeoutMs: number;
  readonly minWatchSeconds: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
}

/** A watch that stayed open this long counts as a success for the backoff. */
const HEALTHY_AFTER_MS = 10_000;

export class Reflector<T extends KubernetesObject> {
  readonly #spec: ResourceSpec;
  readonly #handlers: ReflectorHandlers<T>;
  readonly #log: Logger;
  readonly #lw: ListWatch<T>;
  readonly #watch: AgentWatch;
  readonly #backoff: Backoff;
  #stopped = false;
  readonly #stopping = new AbortController();
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  /** A list or a watch event succeeded since the last failure. */
  #healthy = false;
  #establishedAt: number | undefined;
  #listDelivered = false;

  constructor(kc: KubeConfig, spec: ResourceSpec, handlers: ReflectorHandlers<T>, tuning: ReflectorTuning, log: Logger) {
    this.#spec = spec;
    this.#handlers = handlers;
    const transform = spec.transform;
    this.#log = log.child({ resource: spec.kind });
    this.#backoff = new Backoff(tuning.retryInitialMs, tuning.retryMaxMs);
    this.#watch = new AgentWatch(kc, { idleTimeoutMs: tuning.watchIdleTimeoutMs, minWatchSeconds: tuning.minWatchSeconds }, {
      onStart: () => {
        // The library calls watch right after it has delivered a list's items.
        if (!this.#listDelivered) return;
        this.#listDelivered = false;
        if (!this.#stopped) handlers.listed();
      },
      onEstablished: () => {
        this.#establishedAt = Date.now();
        this.#recovered();
      },
      onEvent: (type, object) => this.#onEvent(type, object),
      ...(transform ? { transform: (object: unknown) => transform(object as KubernetesObject) } : {}),
    });
    const list = async () => {
      const result = await listAll<T>(kc, spec.path, {
        pageSize: tuning.pageSize, timeoutMs: tuning.listTimeoutMs, fieldSelector: spec.fieldSelector,
        signal: this.#stopping.signal, transform,
      });
      this.#log.info({ items: result.items.length, resourceVersion: result.metadata?.resourceVersion }, `listed ${spec.kind}s`);
      this.#healthy = true;
      this.#listDelivered = true;
      this.#recovered();
      return result;
    };
    this.#lw = new ListWatch<T>(spec.path, this.#watch, list, false, undefined, spec.fieldSelector);
    const guard = (fn: (obj: T) => void) => (obj: T) => {
      if (!this.#stopped) fn(obj);
    };
    this.#lw.on('add', guard((o) => handlers.upsert(o)));
    this.#lw.on('update', guard((o) => handlers.upsert(o)));
    this.#lw.on('delete', guard((o) => handlers.delete(o)));
    this.#lw.on('error', (err) => this.#failed(err));
  }

  start(): void {
    this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watch.stopped = true;
    clearTimeout(this.#retryTimer);
    this.#stopping.abort();
    await this.#lw.stop();
  }

  #run(): void {
    if (this.#stopped) return;
    this.#lw.start().catch((err: unknown) => this.#failed(err));
  }

  #onEvent(type: string, object: unknown): void {
    if (type === 'ERROR') {
      const status = object as { code?: number; message?: string } | undefined;
      if (status?.code === 410) {
        this.#log.info({ message: status.message }, `${this.#spec.kind} resourceVersion expired; relisting`);
      } else {
        this.#log.warn({ code: status?.code, message: status?.message }, `${this.#spec.kind} watch reported an error`);
      }
      return;
    }
    this.#healthy = true;
  }

  #recovered(): void {
    if (this.#failures === 0) return;
    this.#log.info({ failures: this.#failures }, `${this.#spec.kind} list/watch recovered`);
    this.#failures = 0;
    if (!this.#stopped) this.#handlers.recovered?.();
  }

  #failed(err: unknown): void {
    if (this.#stopped || this.#retryTimer) return;
    const longLived = this.#establishedAt !== undefined && Date.now() - this.#establishedAt >= HEALTHY_AFTER_MS;
    if (this.#healthy || longLived) this.#backoff.reset();
    this.#healthy = false;
    this.#establishedAt = undefined;
    this.#listDelivered = false;
    this.#failures++;
    this.#handlers.failed?.(err);
    const delay = this.#backoff.next();
    this.#log.warn(
      { err: describe(err), failures: this.#failures, retryInMs: delay },
      `${this.#spec.kind} list/watch failed; keeping the last known state, retrying`,
    );
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#run();
    }, delay);
  }
}

/** One line for the log: the message, the HTTP status or the socket error code underneath. */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const { cause, statusCode } = err as Error & { cause?: unknown; statusCode?: number };
  const message = statusCode && !err.message.includes(`HTTP ${statusCode}`) ? `HTTP ${statusCode} ${err.message}` : err.message;
  const code = (cause as { code?: string } | undefined)?.code;
  return cause instanceof Error ? `${message}: ${cause.message}${code ? ` (${code})` : ''}` : message;
}
