// Prometheus metrics with kube-proxy's names and buckets, so existing
// dashboards and alerts keep working, served on --metrics-bind-address
// together with /healthz and /proxyMode as kube-proxy does.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModeMetricNames } from '../modes/backend.ts';
import { listenHttp, sendJson, sendNotFound, type HttpHandle, type ListenOptions } from '../lib/http-server.ts';
import type { ProxierHealth } from './health.ts';
import { healthBody } from './health.ts';
import type { Logger } from '../lib/log.ts';
import type { NodeState } from './model.ts';
import type { SyncListener, SyncReport } from './runner.ts';

function exponential(start: number, factor: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}
function linear(start: number, width: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + width * i);
}

// kube-proxy: ExponentialBuckets(0.001, 2, 15) for sync durations.
const syncBuckets = exponential(0.001, 2, 15);
// kube-proxy's network programming buckets: 0.25s steps to 1s, 1s to 60s, 5s to 2m, 10s to 5m+.
const programmingBuckets = [...linear(0.25, 0.25, 2), ...linear(1, 1, 59), ...linear(60, 5, 12), ...linear(120, 30, 7)];

export class ProxyMetrics implements SyncListener {
  readonly registry = new Registry();
  private readonly mode: string;
  private readonly now: () => number;
  private readonly syncDuration: Histogram;
  private readonly fullDuration: Histogram;
  private readonly partialDuration: Histogram;
  private readonly lastTimestamp: Gauge;
  private readonly lastQueued: Gauge;
  private readonly programming: Histogram;
  private readonly rulesTotal: Gauge<'table'> | undefined;
  private readonly restoreFailures: Counter;
  private readonly endpointPending: Gauge;
  private readonly servicePending: Gauge;
  private readonly endpointChanges: Counter;
  private readonly serviceChanges: Counter;
  private readonly noLocal: Gauge<'traffic_policy'>;
  private readonly refused: Counter;
  private readonly objectsRefused: Counter<'action'>;
  private readonly repairs: Counter<'mode' | 'what'>;

  /** `mode` and its metric names come from the mode's descriptor (modes/registry.ts). */
  constructor(mode: { readonly name: string; readonly metrics: ModeMetricNames }, opts: { now?: () => number; processMetrics?: boolean } = {}) {
    this.mode = mode.name;
    this.now = opts.now ?? Date.now;
    const r = [this.registry];
    this.syncDuration = new Histogram({ name: 'kubeproxy_sync_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds', buckets: syncBuckets, registers: r });
    this.fullDuration = new Histogram({ name: 'kubeproxy_sync_full_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds for full resyncs', buckets: syncBuckets, registers: r });
    this.partialDuration = new Histogram({ name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds for partial resyncs', buckets: syncBuckets, registers: r });
    this.lastTimestamp = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', help: 'The last time proxy rules were successfully synced', registers: r });
    this.lastQueued = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', help: 'The last time a sync of proxy rules was queued', registers: r });
    this.programming = new Histogram({ name: 'kubeproxy_network_programming_duration_seconds', help: 'In Cluster Network Programming Latency in seconds', buckets: programmingBuckets, registers: r });
    const { owned, syncFailures } = mode.metrics;
    if (owned) this.rulesTotal = new Gauge({ ...owned, labelNames: ['table'], registers: r });
    this.restoreFailures = new Counter({ ...syncFailures, registers: r });
    this.endpointPending = new Gauge({ name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending', help: 'Pending proxy rules Endpoint changes', registers: r });
    this.servicePending = new Gauge({ name: 'kubeproxy_sync_proxy_rules_service_changes_pending', help: 'Pending proxy rules Service changes', registers: r });
    this.endpointChanges = new Counter({ name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total', help: 'Cumulative proxy rules Endpoint changes', registers: r });
    this.serviceChanges = new Counter({ name: 'kubeproxy_sync_proxy_rules_service_changes_total', help: 'Cumulative proxy rules Service changes', registers: r });
    this.refused = new Counter({ name: 'kproxy_sync_refused_service_ports_total', help: 'Service ports a sync left out of the dataplane because a value could not be written safely', registers: r });
    this.objectsRefused = new Counter({ name: 'kproxy_objects_refused_total', help: 'Services and EndpointSlices skipped as malformed (action="skip"), refused in part (action="refuse": an address or NodePort another Service holds, an externalIP outside --external-ip-cidrs) or served in part with a fallback (action="fallback": a scheduler the node lacks)', labelNames: ['action'], registers: r });
    this.noLocal = new Gauge({ name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', help: 'Number of services with a Local traffic policy and no endpoints', labelNames: ['traffic_policy'], registers: r });
    this.repairs = new Counter({
      name: 'kubeproxy_sync_proxy_rules_repairs_total',
      help: 'Objects kproxy restored in the kernel after something else changed them (what: chain, jump, canary, element, or full for a full sync)',
      labelNames: ['mode', 'what'], registers: r,
    });
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** An EndpointSlice or Service event arrived (counted per object, as kube-proxy does). */
  changeSeen(kind: 'Service' | 'EndpointSlice'): void {
    (kind === 'Service' ? this.serviceChanges : this.endpointChanges).inc();
  }

  /** An object was skipped, or part of it refused (once per version). */
  objectRefused(action: 'skip' | 'refuse' | 'fallback'): void {
    this.objectsRefused.inc({ action });
  }

  /** Objects with changes not yet synced, per kind. */
  setPending(services: number, endpointSlices: number): void {
    this.servicePending.set(services);
    this.endpointPending.set(endpointSlices);
  }

  // SyncListener
  onQueued(at: number): void {
    this.lastQueued.set(at / 1000);
  }

  onSynced(report: SyncReport): void {
    const seconds = (report.finishedAt - report.startedAt) / 1000;
    this.syncDuration.observe(seconds);
    (report.full ? this.fullDuration : this.partialDuration).observe(seconds);
    this.lastTimestamp.set(report.finishedAt / 1000);
    const now = this.now();
    for (const t of report.triggerTimes) if (t > 0 && t <= now) this.programming.observe((now - t) / 1000);
    if (this.rulesTotal) for (const [table, n] of Object.entries(report.result.owned)) this.rulesTotal.set({ table }, n);
    if (report.result.refused) this.refused.inc(report.result.refused.length);
    const { internal, external } = noLocalEndpoints(report.state);
    this.noLocal.set({ traffic_policy: 'internal' }, internal);
    this.noLocal.set({ traffic_policy: 'external' }, external);
    for (const d of report.result.repairs ?? []) this.repairs.inc({ mode: this.mode, what: d.what });
  }

  onSyncFailed(report: SyncReport): void {
    this.syncDuration.observe((report.finishedAt - report.startedAt) / 1000);
    this.restoreFailures.inc();
  }

  metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  get proxyMode(): string {
    return this.mode;
  }
}

/** Services (per port and family) with a Local traffic policy whose traffic has no local endpoint to go to. */
export function noLocalEndpoints(state: NodeState): { internal: number; external: number } {
  let internal = 0;
  let external = 0;
  for (const sp of state.services.values()) {
    if (!sp.hasEndpoints || sp.localEndpoints.length > 0) continue;
    if (sp.internalPolicyLocal) internal++;
    if (sp.externalPolicyLocal) external++;
  }
  return { internal, external };
}

/** Serves /metrics, /healthz and /proxyMode, as kube-proxy's metrics address does. */
export function startMetricsServer(metrics: ProxyMetrics, health: ProxierHealth | undefined, port: number, host: string | undefined, _log: Logger, listen: ListenOptions = {}): Promise<HttpHandle> {
  return listenHttp('metrics server', async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      const text = await metrics.metricsText();
      res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
      res.end(text);
    } else if (path === '/proxyMode') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(metrics.proxyMode);
    } else if (path === '/healthz' && health) {
      const s = health.status();
      sendJson(res, s.healthy ? 200 : 503, healthBody(s, false));
    } else {
      sendNotFound(res);
    }
  }, port, host, listen);
}
