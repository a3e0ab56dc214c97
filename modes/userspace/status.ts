// How `kproxy explain` and `kproxy dump --live` (other processes) reach the
// running kproxy's forwarder: a Unix socket in the abstract namespace,
// which belongs to the network namespace (one kproxy per node namespace,
// no file to clean up after a crash). A client sends one JSON line, the
// server answers one JSON line and closes. Read-only: it tells what the
// listeners are and how their endpoints fare, as the metrics do.
import net from 'node:net';
import type { Logger } from '../../lib/log.ts';
import type { ListenerReport } from './engine.ts';
import type { ListenerSpec } from './table.ts';

export const STATUS_SOCKET = '\0kproxy/userspace-status';

/** Requests are small; anything longer is not one. */
const MAX_REQUEST = 4096;

export type StatusRequest = { readonly describe: string } | { readonly table: true };

/** One listener of a service port, with what the forwarder knows of it now. */
export interface LiveListener {
  readonly spec: ListenerSpec;
  /** Why no worker listens on it (EADDRINUSE, ...), when none does. */
  readonly failed?: string;
  readonly report?: ListenerReport;
}

export interface StatusAnswer {
  readonly pid: number;
  readonly workers: number;
  readonly relay: string;
  /** describe: the service port's listeners; table: every listener (no report). */
  readonly listeners: readonly LiveListener[];
  /** table: the Service addresses the running kproxy holds. */
  readonly addresses?: readonly string[];
  /** describe: the port is known to the running kproxy (false: it serves nothing for it). */
  readonly known?: boolean;
  readonly error?: string;
}

export type StatusHandler = (req: StatusRequest) => Promise<StatusAnswer>;

export interface StatusServer {
  close(): Promise<void>;
}

/**
 * Serves `handler` on STATUS_SOCKET. While another kproxy holds the name
 * (a predecessor handing over), binding is retried every 500 ms until it
 * lets go or close() is called.
 */
export function serveStatus(handler: StatusHandler, log: Logger): StatusServer {
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let warned = false;
  const server = net.createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => {});
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST) {
        sock.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let req: StatusRequest;
      try {
        req = parseRequest(buf.slice(0, nl));
      } catch (e) {
        sock.end(JSON.stringify({ error: (e as Error).message }) + '\n');
        return;
      }
      handler(req).then(
        (a) => sock.end(JSON.stringify(a) + '\n'),
        (e: Error) => sock.end(JSON.stringify({ error: e.message }) + '\n'),
      );
    });
  });
  const bind = (): void => {
    if (closed) return;
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') {
        if (!warned) log.info('another kproxy answers explain on this node (a predecessor handing over): waiting for it to let go');
        warned = true;
        timer = setTimeout(bind, 500);
        timer.unref();
      } else {
        log.warn({ err: e.message }, 'explain cannot reach this kproxy: the status socket could not be opened');
      }
    });
    server.listen(STATUS_SOCKET, () => {
      server.removeAllListeners('error');
      server.on('error', () => {});
      if (warned) log.info('the status socket for explain is ours now');
    });
  };
  bind();
  server.unref();
  return {
    close: () => new Promise<void>((resolve) => {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      if (!server.listening) return resolve();
      server.close(() => resolve());
    }),
  };
}

function parseRequest(line: string): StatusRequest {
  const v = JSON.parse(line) as Record<string, unknown>;
  if (typeof v.describe === 'string' && v.describe.length <= 1024) return { describe: v.describe };
  if (v.table === true) return { table: true };
  throw new Error('unknown request');
}

/**
 * Asks the kproxy running in this network namespace. Rejects with a
 * readable reason when none answers (no kproxy in userspace mode here).
 */
export function askStatus(req: StatusRequest, timeoutMs = 10_000): Promise<StatusAnswer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(STATUS_SOCKET);
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => { buf += d; });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      reject(new Error(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'no kproxy in userspace mode runs in this network namespace' : e.message));
    });
    sock.on('end', () => {
      try {
        const a = JSON.parse(buf) as StatusAnswer;
        if (a.error !== undefined) reject(new Error(a.error));
        else resolve(a);
      } catch {
        reject(new Error('the running kproxy gave an answer that is not JSON'));
      }
    });
  });
}
