// One HTTP server per healthCheckNodePort (Services with
// externalTrafficPolicy: Local). Cloud load balancers probe it to send
// traffic only to nodes with a local endpoint. Answers as kube-proxy does:
// 200 when this node has ready local endpoints and the proxy is healthy,
// 503 otherwise, with the endpoint count in the body and in
// X-Load-Balancing-Endpoint-Weight.
import { hostPort } from '../lib/net.ts';
import { listenHttp, sendJson, type HttpHandle } from '../lib/http-server.ts';
import type { Logger } from '../lib/log.ts';
import type { NodeState } from './model.ts';
import type { SyncListener, SyncReport } from './runner.ts';

export interface HealthCheckTarget {
  readonly namespace: string;
  readonly name: string;
  /** Distinct ready local endpoints (ip:port) over all ports and families of the Service. */
  readonly localEndpoints: number;
}

/** healthCheckNodePort → the Service it reports on, from a NodeState. */
export function healthCheckTargets(state: NodeState, log?: Logger): Map<number, HealthCheckTarget> {
  const eps = new Map<number, { namespace: string; name: string; set: Set<string> }>();
  for (const sp of state.services.values()) {
    if (sp.healthCheckNodePort <= 0) continue;
    let t = eps.get(sp.healthCheckNodePort);
    if (t && (t.namespace !== sp.namespace || t.name !== sp.serviceName)) {
      log?.warn({ port: sp.healthCheckNodePort, service: `${sp.namespace}/${sp.serviceName}`, owner: `${t.namespace}/${t.name}` }, 'healthCheckNodePort used by two Services; keeping the first');
      continue;
    }
    if (!t) {
      t = { namespace: sp.namespace, name: sp.serviceName, set: new Set() };
      eps.set(sp.healthCheckNodePort, t);
    }
    // Only ready endpoints count (kube-proxy: terminating fallback endpoints do not attract new LB traffic).
    for (const e of sp.localEndpoints) if (e.ready) t.set.add(hostPort(e.ip, e.port));
  }
  return new Map([...eps].map(([port, t]) => [port, { namespace: t.namespace, name: t.name, localEndpoints: t.set.size }]));
}

export function healthCheckBody(t: HealthCheckTarget, proxyHealthy: boolean): string {
  return JSON.stringify({ service: { namespace: t.namespace, name: t.name }, localEndpoints: t.localEndpoints, serviceProxyHealthy: proxyHealthy }, null, 2);
}

export interface HealthCheckOptions {
  /**
   * Addresses to listen on, one server per address and port (kube-proxy:
   * this node's IPs within --nodeport-addresses); undefined = every address.
   */
  readonly hosts?: readonly string[];
  /** Whether the proxy itself is healthy (the /healthz verdict). */
  readonly proxyHealthy: () => boolean;
  /** Let a successor kproxy bind the same ports while this one stops (see lib/http-server.ts). */
  readonly reusePort?: boolean;
}

export class HealthCheckNodePorts implements SyncListener {
  private readonly opts: HealthCheckOptions;
  private readonly log: Logger;
  private targets = new Map<number, HealthCheckTarget>();
  /** Open servers by "port host". */
  private readonly servers = new Map<string, Promise<HttpHandle | undefined>>();
  private chain: Promise<void> = Promise.resolve();

  constructor(opts: HealthCheckOptions, log: Logger) {
    this.opts = opts;
    this.log = log;
  }

  /** Ports with an open server (on at least one address). */
  async ports(): Promise<number[]> {
    await this.chain;
    const open = new Set<number>();
    for (const [key, h] of this.servers) if (await h) open.add(Number(key.split(' ')[0]));
    return [...open].sort((a, b) => a - b);
  }

  /** Opens servers for new healthCheckNodePorts and closes those of Services that went away. */
  update(state: NodeState): Promise<void> {
    this.targets = healthCheckTargets(state, this.log);
    this.chain = this.chain.then(() => this.reconcile());
    return this.chain;
  }

  onSynced(report: SyncReport): void {
    void this.update(report.state);
  }

  async close(): Promise<void> {
    this.targets = new Map();
    this.chain = this.chain.then(() => this.reconcile());
    await this.chain;
  }

  private async reconcile(): Promise<void> {
    const hosts: readonly (string | undefined)[] = this.opts.hosts ?? [undefined];
    for (const [key, h] of [...this.servers]) {
      const handle = await h;
      if (!this.targets.has(Number(key.split(' ')[0])) || !handle) {
        this.servers.delete(key);
        if (handle) {
          await handle.close();
          this.log.info({ port: handle.port, host: handle.host }, 'closed healthCheckNodePort server');
        }
      }
    }
    for (const port of this.targets.keys()) {
      for (const host of hosts) {
        const key = `${port} ${host ?? '*'}`;
        if (this.servers.has(key)) continue;
        const p = listenHttp(`healthCheckNodePort ${port}`, (_req, res) => {
          const t = this.targets.get(port);
          if (!t) {
            sendJson(res, 503, '{}');
            return;
          }
          const healthy = this.opts.proxyHealthy();
          const ok = t.localEndpoints > 0 && healthy;
          sendJson(res, ok ? 200 : 503, healthCheckBody(t, healthy), { 'X-Load-Balancing-Endpoint-Weight': String(t.localEndpoints) });
        }, port, host, { reusePort: this.opts.reusePort }).then(
          (h) => {
            const t = this.targets.get(port);
            this.log.info({ port, host: host ?? '*', service: t && `${t.namespace}/${t.name}` }, 'opened healthCheckNodePort server');
            return h;
          },
          (err: unknown) => {
            // Retried on the next sync (the server entry is dropped then).
            this.log.error({ err, port, host: host ?? '*' }, 'cannot open healthCheckNodePort server');
            return undefined;
          },
        );
        this.servers.set(key, p);
        await p;
      }
    }
  }
}
