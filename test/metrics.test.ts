// Prometheus metrics with kube-proxy's names, scraped over real HTTP.
import { modeOf } from '../modes/registry.ts';
import test from 'ava';
import { ProxierHealth } from '../proxy/health.ts';
import { silentLogger } from '../lib/log.ts';
import { ProxyMetrics, startMetricsServer } from '../proxy/metrics.ts';
import type { SyncReport } from '../proxy/runner.ts';
import { fullChanges } from '../proxy/model.ts';
import { ep, nodeState, svc } from './helpers/state.ts';

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const state = nodeState([
  svc({ name: 'a/local:p', clusterIP: '10.96.0.1', port: 80, internalPolicyLocal: true, hasEndpoints: true, clusterEndpoints: [], localEndpoints: [] }),
  svc({ name: 'a/ext:p', clusterIP: '10.96.0.2', port: 80, externalPolicyLocal: true, hasEndpoints: true, clusterEndpoints: [ep('10.0.0.1', 80)], localEndpoints: [] }),
  svc({ name: 'a/ok:p', clusterIP: '10.96.0.3', port: 80, externalPolicyLocal: true, clusterEndpoints: [ep('10.0.0.1', 80)], localEndpoints: [ep('10.0.0.2', 80, { isLocal: true })] }),
]);

function report(extra: Partial<SyncReport>): SyncReport {
  return {
    startedAt: 1_700_000_000_000, finishedAt: 1_700_000_000_250, ok: true, full: true, state, changes: fullChanges(state), triggerTimes: [],
    result: { ok: true, full: true, renderMs: 1, applyMs: 1, size: 10, owned: { nat: 42, filter: 7 } },
    ...extra,
  };
}

test('iptables mode: sync metrics under kube-proxy names, /proxyMode and /healthz on the metrics port', async (t) => {
  const now = 1_700_000_010_000;
  const metrics = new ProxyMetrics(modeOf('iptables'), { now: () => now });
  const health = new ProxierHealth({ healthTimeoutMs: 60_000, now: () => now });
  const srv = await startMetricsServer(metrics, health, 0, '127.0.0.1', silentLogger());
  t.teardown(() => srv.close());

  metrics.onQueued(1_699_999_999_000);
  metrics.onSynced(report({ triggerTimes: [now - 2_000, now - 500] }));
  metrics.onSynced(report({ full: false, startedAt: 1_700_000_001_000, finishedAt: 1_700_000_001_010 }));
  metrics.onSyncFailed(report({ ok: false }));
  metrics.changeSeen('Service');
  metrics.changeSeen('EndpointSlice');
  metrics.changeSeen('EndpointSlice');
  metrics.setPending(1, 2);

  const r = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
  t.is(r.status, 200);
  t.regex(r.headers.get('content-type') ?? '', /text\/plain/);
  const text = await r.text();
  t.is(value(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count'), 3, 'failures are timed too, as kube-proxy does');
  t.is(value(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count'), 1);
  t.is(value(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), 1);
  t.is(value(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_sum'), 0.25);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.016"}'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.256"}'), 3);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'), 1_700_000_001.01);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds'), 1_699_999_999);
  t.is(value(text, 'kubeproxy_network_programming_duration_seconds_count'), 2);
  t.is(value(text, 'kubeproxy_network_programming_duration_seconds_sum'), 2.5);
  t.is(value(text, 'kubeproxy_network_programming_duration_seconds_bucket{le="0.5"}'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"}'), 42);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_iptables_total{table="filter"}'), 7);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_service_changes_total'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 2);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_service_changes_pending'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 2);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"}'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external"}'), 1);
  t.true((value(text, 'process_resident_memory_bytes') ?? 0) > 0, 'process metrics');

  const mode = await fetch(`http://127.0.0.1:${srv.port}/proxyMode`);
  t.is(await mode.text(), 'iptables');
  t.is((await fetch(`http://127.0.0.1:${srv.port}/healthz`)).status, 503, 'not synced yet');
  health.updated(now);
  t.is((await fetch(`http://127.0.0.1:${srv.port}/healthz`)).status, 200);
  t.is((await fetch(`http://127.0.0.1:${srv.port}/nope`)).status, 404);
});

test('nftables mode counts failures under the nftables name and has no iptables rule gauge', async (t) => {
  const metrics = new ProxyMetrics(modeOf('nftables'), { processMetrics: false });
  metrics.onSyncFailed(report({ ok: false }));
  metrics.onSynced(report({}));
  const text = await metrics.metricsText();
  t.is(value(text, 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total'), 1);
  t.false(text.includes('kubeproxy_sync_proxy_rules_iptables_total'));
  t.false(text.includes('process_resident_memory_bytes'));
});

test('repairs are counted per mode and kind, from the syncs that applied them', async (t) => {
  const metrics = new ProxyMetrics(modeOf('nftables'), { processMetrics: false });
  metrics.onSynced(report({}));
  const repaired = (repairs: { what: string; object: string }[]): SyncReport =>
    report({ result: { ok: true, full: false, renderMs: 1, applyMs: 1, size: 3, owned: {}, repairs } });
  metrics.onSynced(repaired([{ what: 'chain', object: 'ip kproxy cluster-3' }, { what: 'element', object: 'ip kproxy service-ips { 10.96.0.10 . tcp . 80 }' }]));
  metrics.onSynced(repaired([{ what: 'element', object: 'ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 1 }' }]));
  metrics.onSyncFailed({ ...repaired([{ what: 'full', object: 'x' }]), ok: false });
  const text = await metrics.metricsText();
  t.is(value(text, 'kubeproxy_sync_proxy_rules_repairs_total{mode="nftables",what="chain"}'), 1);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_repairs_total{mode="nftables",what="element"}'), 2);
  t.is(value(text, 'kubeproxy_sync_proxy_rules_repairs_total{mode="nftables",what="full"}'), undefined, 'a failed sync repaired nothing');
});
