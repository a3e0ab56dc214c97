// Posts a Warning Event (core/v1) about each Service or EndpointSlice that
// kproxy skips as malformed, in the object's namespace, so that `kubectl
// describe service X` and `kubectl get events` say why it is not proxied.
// Only for the API server source. Events are best effort: a burst limit
// keeps a broken cluster from being flooded by every node, and a refused or
// failed post is logged once and never reaches syncing.
import { createHash } from 'node:crypto';
import type { CoreV1Event, KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../lib/log.ts';
import type { InvalidObject } from '../tracker-api.ts';
import { loadKubeConfig } from './kube-config.ts';
import { apiRequest, ApiError } from './kube-request.ts';

export const reportingComponent = 'kproxy';

/** Event reasons, one per kind (CamelCase, as Kubernetes components use). */
export const invalidReasons: Readonly<Record<InvalidObject['kind'], string>> = {
  Service: 'InvalidService',
  EndpointSlice: 'InvalidEndpointSlice',
};

/** The reason of an Event about a refused claim (an address or NodePort another Service holds). */
export const refusedReason = 'ServicePortRefused';

/** The reason of an Event about a Service port served with a fallback (what it asks for is not available here). */
export const fallbackReason = 'ServicePortFallback';

const apiVersions: Readonly<Record<InvalidObject['kind'], string>> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
};

/** The API server keeps Event messages short; longer ones are cut here, not refused there. */
const maxMessage = 1024;

export interface EventRecorderOptions {
  /** This node's name: reportingInstance and source.host. */
  readonly nodeName: string;
  /** Path of a kubeconfig file; without it, the same fallbacks as the kube source. */
  readonly kubeconfig?: string;
  /** An already loaded configuration (instead of `kubeconfig`). */
  readonly kubeConfig?: KubeConfig;
  /** Events that may be posted at once (default 25). */
  readonly burst?: number;
  /** One more Event may be posted after this long (default 5 s). */
  readonly refillMs?: number;
  /** Time allowed for one post (default 10 s). */
  readonly timeoutMs?: number;
  /** Clock (tests). */
  readonly now?: () => number;
}

/**
 * The Event that tells about one skipped object. Its name is the object's
 * plus a digest of its uid, resourceVersion and problems: every node finds
 * the same problem, and all of them posting under one name leaves one Event
 * (the others get 409 AlreadyExists), also across restarts.
 */
export function invalidObjectEvent(invalid: InvalidObject, nodeName: string, at: Date): CoreV1Event {
  const m = invalid.object.metadata!;
  const digest = createHash('sha256')
    .update([invalid.kind, m.uid ?? '', m.resourceVersion ?? '', ...invalid.problems].join('\n'))
    .digest('hex').slice(0, 16);
  const list = invalid.problems.join('; ');
  const refuse = invalid.action === 'refuse';
  const fallback = invalid.action === 'fallback';
  const message = fallback
    ? `kproxy proxies this ${invalid.kind} with a fallback on node ${nodeName}: ${list}`
    : refuse
      ? `kproxy refuses part of this ${invalid.kind} (the rest is proxied): ${list}`
      : `kproxy skips this ${invalid.kind} (kept the last valid version, if any): ${list}`;
  return {
    metadata: { name: `${m.name!.slice(0, 253 - 1 - digest.length)}.${digest}`, namespace: m.namespace },
    involvedObject: {
      kind: invalid.kind, apiVersion: apiVersions[invalid.kind],
      namespace: m.namespace, name: m.name, uid: m.uid, resourceVersion: m.resourceVersion,
    },
    type: 'Warning',
    reason: fallback ? fallbackReason : refuse ? refusedReason : invalidReasons[invalid.kind],
    action: fallback ? 'Fallback' : refuse ? 'Refuse' : 'Skip',
    message: message.length > maxMessage ? `${message.slice(0, maxMessage - 3)}...` : message,
    source: { component: reportingComponent, host: nodeName },
    reportingComponent,
    reportingInstance: nodeName,
    firstTimestamp: at,
    lastTimestamp: at,
    count: 1,
  };
}

export class KubeEventRecorder {
  readonly #kc: KubeConfig;
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #burst: number;
  readonly #refillMs: number;
  readonly #timeoutMs: number;
  readonly #now: () => number;
  #tokens: number;
  #refilledAt: number;
  readonly #inFlight = new Set<Promise<void>>();
  #warnedFailure = false;
  #warnedDropped = false;
  #closed = false;
  /** Counts for tests and debugging. */
  readonly stats = { posted: 0, alreadyPosted: 0, failed: 0, dropped: 0 };

  constructor(opts: EventRecorderOptions, log: Logger) {
    if (!opts.nodeName) throw new Error('KubeEventRecorder: nodeName is required');
    this.#kc = opts.kubeConfig ?? loadKubeConfig(opts.kubeconfig);
    this.#nodeName = opts.nodeName;
    this.#log = log;
    this.#burst = opts.burst ?? 25;
    this.#refillMs = opts.refillMs ?? 5000;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#now = opts.now ?? Date.now;
    this.#tokens = this.#burst;
    this.#refilledAt = this.#now();
  }

  /** Posts an Event about a skipped object in the background; never throws. */
  readonly record = (invalid: InvalidObject): void => {
    if (this.#closed) return;
    const m = invalid.object.metadata;
    if (!m?.namespace || !m.name) {
      this.#log.debug({ kind: invalid.kind }, 'no Event for an object without namespace/name');
      return;
    }
    if (!this.#take()) {
      this.stats.dropped++;
      const fields = { kind: invalid.kind, object: `${m.namespace}/${m.name}`, burst: this.#burst, refillMs: this.#refillMs };
      if (this.#warnedDropped) this.#log.debug(fields, 'Event dropped: rate limit');
      else {
        this.#warnedDropped = true;
        this.#log.warn(fields, 'too many Events about invalid objects: some are dropped (the log still names every one)');
      }
      return;
    }
    const p = this.#post(invalidObjectEvent(invalid, this.#nodeName, new Date(this.#now())));
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  };

  /** Resolves once every Event posted so far has been answered or has failed. */
  async flush(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }

  /** Stops posting and waits (each post is bounded by its timeout) for those under way. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  /** Token bucket: `burst` at once, then one per `refillMs`. */
  #take(): boolean {
    const now = this.#now();
    const earned = Math.floor((now - this.#refilledAt) / this.#refillMs);
    if (earned > 0) {
      this.#tokens = Math.min(this.#burst, this.#tokens + earned);
      this.#refilledAt = this.#tokens === this.#burst ? now : this.#refilledAt + earned * this.#refillMs;
    }
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  async #post(event: CoreV1Event): Promise<void> {
    const object = `${event.involvedObject.namespace}/${event.involvedObject.name}`;
    try {
      // The namespace comes from the skipped object: kept to one path segment.
      const path = `/api/v1/namespaces/${encodeURIComponent(event.metadata.namespace!)}/events`;
      await apiRequest(this.#kc, 'POST', path, 'post Event', { timeoutMs: this.#timeoutMs, body: { apiVersion: 'v1', kind: 'Event', ...event } });
      this.stats.posted++;
      this.#log.debug({ kind: event.involvedObject.kind, object, reason: event.reason }, 'Event posted');
    } catch (err) {
      if (err instanceof ApiError && err.statusCode === 409) {
        // Another node (or this one before a restart) told about this version already.
        this.stats.alreadyPosted++;
        this.#log.debug({ kind: event.involvedObject.kind, object, name: event.metadata.name }, 'Event already posted');
        return;
      }
      this.stats.failed++;
      const fields = { kind: event.involvedObject.kind, object, err: (err as Error).message };
      if (this.#warnedFailure) this.#log.debug(fields, 'could not post Event');
      else {
        this.#warnedFailure = true;
        this.#log.warn(fields, 'could not post an Event about an invalid object (needs RBAC create on events); syncing is not affected, further failures are logged at debug');
      }
    }
  }
}
