// The forwarder's metrics: one snapshot per scrape, absolute values per
// Service port and protocol, kube-proxy-style names.
import test from 'ava';
import { Registry } from 'prom-client';
import { forwarderMetricNames, registerForwarderMetrics } from '../modes/userspace/metrics.ts';
import type { ForwarderSnapshot } from '../modes/userspace/forwarder.ts';
import { newCounters } from '../modes/userspace/listener-state.ts';

function snap(connections: number): ForwarderSnapshot {
  return {
    services: {
      'TCP default/web:http': { ...newCounters(), connections, active: 2, bytesToEndpoints: 100, bytesToClients: 2000, connectFailures: 3, retries: 3, refused: 1 },
      'UDP kube-system/dns:dns': { ...newCounters(), connections: 7, dropped: 4 },
    },
    ejected: { 'TCP default/web:http': 1, 'UDP kube-system/dns:dns': 0 },
    endpoints: [], listening: 2, open: 2, buffered: 0, workers: 2, relay: 'native',
  };
}

test('one snapshot per scrape, reported per Service port', async (t) => {
  let calls = 0;
  let connections = 10;
  const registry = new Registry();
  registerForwarderMetrics(registry, async () => { calls++; return snap(connections); }, 1000);
  const text = await registry.metrics();
  t.is(calls, 1, 'every metric of one scrape shares one snapshot');
  for (const name of forwarderMetricNames) t.true(text.includes(`# TYPE ${name}`), name);
  t.true(text.includes('kubeproxy_userspace_connections_total{service_port="default/web:http",protocol="TCP"} 10'));
  t.true(text.includes('kubeproxy_userspace_active_connections{service_port="default/web:http",protocol="TCP"} 2'));
  t.true(text.includes('kubeproxy_userspace_bytes_total{service_port="default/web:http",protocol="TCP",direction="to_client"} 2000'));
  t.true(text.includes('kubeproxy_userspace_connect_retries_total{service_port="default/web:http",protocol="TCP"} 3'));
  t.true(text.includes('kubeproxy_userspace_ejected_endpoints{service_port="default/web:http",protocol="TCP"} 1'));
  t.true(text.includes('kubeproxy_userspace_dropped_total{service_port="kube-system/dns:dns",protocol="UDP"} 4'));
  connections = 15;
  await new Promise((r) => setTimeout(r, 1100));
  t.true((await registry.metrics()).includes('kubeproxy_userspace_connections_total{service_port="default/web:http",protocol="TCP"} 15'), 'absolute, not added up');
});

test('snapshots are shared within maxAge, and a failed one reports nothing instead of failing the scrape', async (t) => {
  let calls = 0;
  const registry = new Registry();
  registerForwarderMetrics(registry, async () => {
    calls++;
    if (calls > 1) throw new Error('worker restarting');
    return snap(1);
  }, 60_000);
  await registry.metrics();
  t.is(calls, 1);
  const r2 = new Registry();
  let n = 0;
  registerForwarderMetrics(r2, async () => { n++; throw new Error('worker restarting'); }, 0);
  const text = await r2.metrics();
  t.true(n > 0);
  t.false(text.includes('service_port='));
});
