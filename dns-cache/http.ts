// /health (for the DaemonSet's probes) and /metrics (Prometheus), on one
// server when both addresses are the same.
import http from 'node:http';
import type { Registry } from 'prom-client';
import { parseHostPort } from './config.ts';

export interface HttpEndpoints {
  /** Bound addresses, "IP:PORT" (port 0 resolved), keyed by what they serve. */
  readonly health: string;
  readonly metrics: string;
  close(): Promise<void>;
}

type Route = (res: http.ServerResponse) => void;

function serve(addr: string, routes: Record<string, Route>): Promise<http.Server> {
  const hp = parseHostPort(addr, undefined);
  if (typeof hp === 'string') return Promise.reject(new Error(hp));
  const server = http.createServer((req, res) => {
    const route = routes[(req.url ?? '/').split('?')[0]];
    if (!route || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404).end('not found\n');
      return;
    }
    route(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot serve http on ${addr}: ${e.message}`)));
    server.listen({ host: hp.host, port: hp.port }, () => resolve(server));
  });
}

function boundAddr(s: http.Server): string {
  const a = s.address();
  if (a === null || typeof a === 'string') return String(a);
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
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
  const servers: http.Server[] = [];
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
    for (const s of servers) s.close();
    throw e;
  }
  return {
    health: healthBound,
    metrics: metricsBound,
    close: () => Promise.all(servers.map((s) => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); }))).then(() => undefined),
  };
}
