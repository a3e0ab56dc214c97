// /health (for the DaemonSet's probes) and /metrics (Prometheus), on one
// server when both addresses are the same.
import { hostPort } from '../lib/net.ts';
import type { ServerResponse } from 'node:http';
import { listenHttp, sendNotFound, type HttpHandle } from '../lib/http-server.ts';
import type { Registry } from 'prom-client';
import { parseHostPort } from './config.ts';

export interface HttpEndpoints {
  /** Bound addresses, "IP:PORT" (port 0 resolved), keyed by what they serve. */
  readonly health: string;
  readonly metrics: string;
  close(): Promise<void>;
}

type Route = (res: ServerResponse) => void;

function serve(addr: string, routes: Record<string, Route>): Promise<HttpHandle> {
  const hp = parseHostPort(addr, undefined);
  if (typeof hp === 'string') return Promise.reject(new Error(hp));
  return listenHttp(`dns-cache ${Object.keys(routes).join(' and ')}`, (req, res) => {
    const route = routes[(req.url ?? '/').split('?')[0]];
    if (!route || (req.method !== 'GET' && req.method !== 'HEAD')) sendNotFound(res);
    else route(res);
  }, hp.port, hp.host);
}

function boundAddr(s: HttpHandle): string {
  return hostPort(s.host, s.port);
}

export async function startHttp(healthAddr: string, metricsAddr: string, healthy: () => string | undefined, registry: Registry): Promise<HttpEndpoints> {
  const health: Route = (res) => {
    const problem = healthy();
    if (problem) res.writeHead(503, { 'content-type': 'text/plain' }).end(`${problem}\n`);
    else res.writeHead(200, { 'content-type': 'text/plain' }).end('OK\n');
  };
  const metrics: Route = (res) => {
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (e: unknown) => res.writeHead(500).end(`${(e as Error).message}\n`),
    );
  };
  const servers: HttpHandle[] = [];
  let healthBound = '';
  let metricsBound = '';
  try {
    if (healthAddr !== '' && healthAddr === metricsAddr) {
      const s = await serve(healthAddr, { '/health': health, '/metrics': metrics });
      servers.push(s);
      healthBound = metricsBound = boundAddr(s);
    } else {
      if (healthAddr !== '') {
        const s = await serve(healthAddr, { '/health': health });
        servers.push(s);
        healthBound = boundAddr(s);
      }
      if (metricsAddr !== '') {
        const s = await serve(metricsAddr, { '/metrics': metrics });
        servers.push(s);
        metricsBound = boundAddr(s);
      }
    }
  } catch (e) {
    await Promise.all(servers.map((s) => s.close()));
    throw e;
  }
  return {
    health: healthBound,
    metrics: metricsBound,
    close: () => Promise.all(servers.map((s) => s.close())).then(() => undefined),
  };
}
