// A small HTTP listener shared by the healthz, metrics and healthCheckNodePort
// servers: resolves once listening (with the real port when 0 was asked for)
// and turns a bind failure into a KPROXY_BIND_FAILED error.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { KproxyError } from './errors.ts';

export interface HttpHandle {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface ListenOptions {
  /**
   * SO_REUSEPORT: another process of the same user may bind the port too.
   * A proxy mode that keeps serving while its successor starts beside it
   * (a rolling update that surges) lets the successor bind its probe and
   * metrics ports meanwhile.
   */
  readonly reusePort?: boolean;
}

/** Listens on host:port (host undefined = every address). */
export function listenHttp(what: string, handler: Handler, port: number, host?: string, opts: ListenOptions = {}): Promise<HttpHandle> {
  const server: Server = createServer((req, res) => {
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`internal error: ${(err as Error).message}\n`);
    });
  });
  // Probes and scrapers keep connections alive; closing must not wait for them.
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new KproxyError('KPROXY_BIND_FAILED', `${what}: cannot listen on ${host ?? '*'}:${port}: ${err.code ?? err.message}`, { cause: err }));
    });
    server.listen({ port, host, reusePort: opts.reusePort === true }, () => {
      const addr = server.address();
      const real = typeof addr === 'object' && addr !== null ? addr : { address: host ?? '', port };
      resolve({
        host: real.address,
        port: real.port,
        close: () => new Promise<void>((done) => {
          server.close(() => done());
          server.closeAllConnections();
        }),
      });
    });
  });
}

export function sendJson(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff', ...extra });
  res.end(body);
}

export function sendNotFound(res: ServerResponse): void {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('404 page not found\n');
}
