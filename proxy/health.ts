// /healthz and /livez, with kube-proxy's semantics:
//  - live unless a queued change has waited longer than the health timeout
//    (2 × syncPeriod) without a successful sync; so, as in kube-proxy, alive
//    while starting up (an API server unreachable at start-up must not get
//    kproxy killed by its liveness probe over and over);
//  - /healthz is stricter than kube-proxy's: 503 also before the first
//    successful sync (a node without rules is not ready for traffic), and
//    when this node is being deleted (deletionTimestamp set, or the cluster
//    autoscaler's ToBeDeletedByClusterAutoscaler taint), so load balancers
//    drain it;
//  - /livez ignores node eligibility: a draining node is still alive.
import type { V1Node } from '@kubernetes/client-node';
import { listenHttp, sendJson, sendNotFound, type HttpHandle, type ListenOptions } from '../lib/http-server.ts';
import type { Logger } from '../lib/log.ts';
import type { SyncListener, SyncReport } from './runner.ts';

export interface HealthStatus {
  /** Synced at least once, and no queued change is older than the timeout. */
  readonly healthy: boolean;
  /** No queued change is older than the timeout (true while starting up). */
  readonly live: boolean;
  /** Epoch ms of the last successful sync; undefined before the first. */
  readonly lastUpdated: number | undefined;
  readonly currentTime: number;
  readonly nodeEligible: boolean;
}

const zeroTime = '0001-01-01T00:00:00.000Z';

export class ProxierHealth implements SyncListener {
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private lastUpdated: number | undefined;
  private oldestPending: number | undefined;
  private nodeEligible = true;

  constructor(opts: { healthTimeoutMs: number; now?: () => number }) {
    this.timeoutMs = opts.healthTimeoutMs;
    this.now = opts.now ?? Date.now;
  }

  /** A change was queued; starts the staleness clock unless one is already running. */
  queued(at: number = this.now()): void {
    this.oldestPending ??= at;
  }

  /** A sync succeeded: nothing is pending any more. */
  updated(at: number = this.now()): void {
    this.lastUpdated = at;
    this.oldestPending = undefined;
  }

  /** Tracks whether this node is being removed (kube-proxy's nodeEligible). */
  syncNode(node: V1Node | undefined): void {
    if (!node) return;
    const deleting = node.metadata?.deletionTimestamp !== undefined && node.metadata?.deletionTimestamp !== null;
    const tainted = (node.spec?.taints ?? []).some((t) => t.key === 'ToBeDeletedByClusterAutoscaler');
    this.nodeEligible = !deleting && !tainted;
  }

  status(): HealthStatus {
    const currentTime = this.now();
    const live = this.oldestPending === undefined || currentTime - this.oldestPending <= this.timeoutMs;
    const healthy = live && this.lastUpdated !== undefined;
    return { healthy, live, lastUpdated: this.lastUpdated, currentTime, nodeEligible: this.nodeEligible };
  }

  // SyncListener
  onQueued(at: number): void {
    this.queued(at);
  }
  onSynced(report: SyncReport): void {
    this.updated(report.finishedAt);
    if (report.pendingSince !== undefined) this.queued(report.pendingSince);
  }
}

function iso(ms: number | undefined): string {
  return ms === undefined ? zeroTime : new Date(ms).toISOString();
}

/** The JSON body kube-proxy sends: lastUpdated, currentTime and, for /healthz, nodeEligible. */
export function healthBody(s: HealthStatus, withNode: boolean): string {
  const body: Record<string, unknown> = { lastUpdated: iso(s.lastUpdated), currentTime: iso(s.currentTime) };
  if (withNode) body.nodeEligible = s.nodeEligible;
  return JSON.stringify(body);
}

/** Serves /healthz and /livez on host:port. */
export function startHealthServer(health: ProxierHealth, port: number, host: string | undefined, log: Logger, listen: ListenOptions = {}): Promise<HttpHandle> {
  return listenHttp('healthz server', (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/livez') {
      sendNotFound(res);
      return;
    }
    const s = health.status();
    const ok = path === '/healthz' ? s.healthy && s.nodeEligible : s.live;
    if (!ok) log.debug({ path, ...s }, 'health check failing');
    sendJson(res, ok ? 200 : 503, healthBody(s, path === '/healthz'));
  }, port, host, listen);
}
