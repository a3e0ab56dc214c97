// The forwarder's Prometheus metrics, per Service port and protocol, in
// kube-proxy's naming style. Counters live in the worker processes; one
// snapshot of all of them is taken per scrape (shared by every metric) and
// reported as absolute values.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ForwarderSnapshot } from './forwarder.ts';
import type { ServiceCounters } from './listener-state.ts';

const labelNames = ['service_port', 'protocol'] as const;
type Labels = { service_port: string; protocol: string };

/** "TCP ns/name:port" → labels. */
function labels(key: string): Labels {
  const space = key.indexOf(' ');
  return { service_port: key.slice(space + 1), protocol: key.slice(0, space) };
}

export const forwarderMetricNames = [
  'kubeproxy_userspace_active_connections',
  'kubeproxy_userspace_connections_total',
  'kubeproxy_userspace_bytes_total',
  'kubeproxy_userspace_connect_failures_total',
  'kubeproxy_userspace_connect_retries_total',
  'kubeproxy_userspace_refused_total',
  'kubeproxy_userspace_dropped_total',
  'kubeproxy_userspace_ejected_endpoints',
] as const;

/**
 * Registers the forwarder's metrics on `registry`; `snapshot` is called at
 * most once per scrape (within `maxAgeMs`).
 */
export function registerForwarderMetrics(registry: Registry, snapshot: () => Promise<ForwarderSnapshot>, maxAgeMs = 500): void {
  let cached: { at: number; snap: Promise<ForwarderSnapshot | undefined> } | undefined;
  const current = (): Promise<ForwarderSnapshot | undefined> => {
    const now = Date.now();
    if (cached === undefined || now - cached.at > maxAgeMs) {
      // A failed snapshot (a worker restarting) reports nothing this scrape rather than failing the scrape.
      cached = { at: now, snap: snapshot().catch(() => undefined) };
    }
    return cached.snap;
  };
  const registers = [registry];
  const fromCounter = (name: string, help: string, field: keyof ServiceCounters) =>
    new Counter<keyof Labels>({
      name, help, labelNames, registers,
      async collect() {
        const s = await current();
        this.reset();
        for (const [k, c] of Object.entries(s?.services ?? {})) this.inc(labels(k), c[field]);
      },
    });
  new Gauge<keyof Labels>({
    name: 'kubeproxy_userspace_active_connections', help: 'Open connections (TCP) and flows (UDP) through the userspace forwarder, per Service port', labelNames, registers,
    async collect() {
      const s = await current();
      this.reset();
      for (const [k, c] of Object.entries(s?.services ?? {})) this.set(labels(k), c.active);
    },
  });
  fromCounter('kubeproxy_userspace_connections_total', 'Connections (TCP) and flows (UDP) forwarded, per Service port', 'connections');
  new Counter<keyof Labels | 'direction'>({
    name: 'kubeproxy_userspace_bytes_total', help: 'Bytes forwarded, per Service port and direction (to_endpoint, to_client)', labelNames: [...labelNames, 'direction'], registers,
    async collect() {
      const s = await current();
      this.reset();
      for (const [k, c] of Object.entries(s?.services ?? {})) {
        this.inc({ ...labels(k), direction: 'to_endpoint' }, c.bytesToEndpoints);
        this.inc({ ...labels(k), direction: 'to_client' }, c.bytesToClients);
      }
    },
  });
  fromCounter('kubeproxy_userspace_connect_failures_total', 'Connects to an endpoint that were refused or timed out (UDP: ICMP errors), per Service port', 'connectFailures');
  fromCounter('kubeproxy_userspace_connect_retries_total', 'Connect attempts made on another endpoint after a failure, per Service port', 'retries');
  fromCounter('kubeproxy_userspace_refused_total', 'Connections refused (no endpoint, or none could be reached), per Service port', 'refused');
  fromCounter('kubeproxy_userspace_dropped_total', 'Connections and datagrams dropped (source ranges, or no endpoint for the client under a Local policy), per Service port', 'dropped');
  new Gauge<keyof Labels>({
    name: 'kubeproxy_userspace_ejected_endpoints', help: 'Endpoints skipped after failing repeatedly (passive health), per Service port', labelNames, registers,
    async collect() {
      const s = await current();
      this.reset();
      for (const [k, n] of Object.entries(s?.ejected ?? {})) this.set(labels(k), n);
    },
  });
}
