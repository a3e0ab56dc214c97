// TCP through Node's socket layer: one listener per address and port, and
// for each accepted client a connect to an endpoint, retried on the next
// endpoint when it is refused or times out, then bytes copied both ways
// with half-close carried through, resets propagated, back-pressure (a
// side whose peer reads slowly stops being read) and an idle timeout.
import net from 'node:net';
import type { EndpointState } from './health.ts';
import type { ForwardContext, ListenerState, ServiceCounters } from './listener-state.ts';

/** One client connection and, once connected, its endpoint connection. */
export class TcpConn {
  readonly client: net.Socket;
  /** The counters of the Service port it was accepted for. */
  readonly counters: ServiceCounters;
  upstream: net.Socket | undefined;
  endpoint: EndpointState | undefined;
  /** When (health clock, ms) it is closed because its endpoint or listener went away; 0 = not draining. */
  drainDeadline = 0;
  /** Held without an answer (a dropped client). */
  held = false;

  constructor(client: net.Socket, counters: ServiceCounters) {
    this.client = client;
    this.counters = counters;
  }

  /** Closes both sides at once with a reset. */
  abort(): void {
    if (!this.client.destroyed) this.client.resetAndDestroy();
    if (this.upstream !== undefined && !this.upstream.destroyed) this.upstream.resetAndDestroy();
  }
}

export class TcpListener {
  readonly state: ListenerState;
  readonly conns = new Set<TcpConn>();
  readonly #ctx: ForwardContext;
  readonly #server: net.Server;
  #accepting = false;

  constructor(state: ListenerState, ctx: ForwardContext) {
    this.state = state;
    this.#ctx = ctx;
    // pauseOnConnect: nothing is read from the client until an endpoint accepted, so nothing is buffered.
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => this.#accept(s));
  }

  get accepting(): boolean {
    return this.#accepting;
  }

  listen(): Promise<void> {
    const { ip, port } = this.state.spec;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      this.#server.once('error', onError);
      this.#server.listen({ host: ip, port, reusePort: this.#ctx.options.reusePort, backlog: this.#ctx.options.backlog, ipv6Only: ip === '::' }, () => {
        this.#server.off('error', onError);
        this.#server.on('error', (e) => this.#ctx.log.error({ listener: this.state.key, err: e.message }, 'listener error'));
        this.#accepting = true;
        resolve();
      });
    });
  }

  /** Bytes moved so far by the open connections, and bytes in their write buffers. */
  openBytes(): { toEndpoints: number; toClients: number; buffered: number } {
    let toEndpoints = 0;
    let toClients = 0;
    let buffered = 0;
    for (const conn of this.conns) {
      if (conn.upstream === undefined) continue;
      toEndpoints += conn.upstream.bytesWritten;
      toClients += conn.client.bytesWritten;
      buffered += conn.upstream.writableLength + conn.client.writableLength;
    }
    return { toEndpoints, toClients, buffered };
  }

  /** Stops accepting; open connections go on. */
  stopAccepting(): void {
    if (!this.#accepting) return;
    this.#accepting = false;
    this.#server.close();
  }

  #accept(client: net.Socket): void {
    const st = this.state;
    const clientIP = client.remoteAddress;
    if (clientIP === undefined) {
      client.destroy();
      return;
    }
    client.on('error', () => { /* handled by the owner of the connection */ });
    const d = st.decide(clientIP);
    if ('verdict' in d) {
      if (d.verdict === 'reject') {
        st.counters.refused++;
        client.resetAndDestroy();
      } else {
        // Dropped: the kernel modes never answer; here the handshake is done, so hold the client without an answer.
        st.counters.dropped++;
        client.setTimeout(Math.min(this.#ctx.options.tcpIdleMs, 120_000), () => client.resetAndDestroy());
        const conn = new TcpConn(client, st.counters);
        conn.held = true;
        this.conns.add(conn);
        client.once('close', () => this.conns.delete(conn));
      }
      return;
    }
    const conn = new TcpConn(client, st.counters);
    this.conns.add(conn);
    st.counters.connections++;
    st.counters.active++;
    let tried: Set<EndpointState> | undefined;
    let attempt = 0;
    const ctx = this.#ctx;
    const timeouts = ctx.options.connectTimeoutsMs;
    const clientGone = () => {
      conn.upstream?.destroy();
    };
    client.once('close', clientGone);
    const fail = (): void => {
      st.counters.refused++;
      client.off('close', clientGone);
      this.#finish(conn);
      client.resetAndDestroy();
    };
    const tryNext = (): void => {
      if (client.destroyed) {
        this.#finish(conn);
        return;
      }
      const e = d.pool.pick(clientIP, tried, ctx.health.now());
      if (e === undefined || attempt >= timeouts.length) {
        fail();
        return;
      }
      if (attempt > 0) st.counters.retries++;
      // Remembered at the pick, not at the connect: the client's next connections may be accepted before this one connects.
      d.pool.affinity?.remember(clientIP, e.key, ctx.health.now());
      const timeout = timeouts[attempt++];
      const up = net.connect({ host: e.ip, port: e.port, allowHalfOpen: true, noDelay: true });
      conn.upstream = up;
      up.setTimeout(timeout);
      const failed = (why: string): void => {
        up.removeAllListeners();
        up.on('error', () => {});
        up.destroy();
        conn.upstream = undefined;
        st.counters.connectFailures++;
        ctx.health.failed(e, why);
        (tried ??= new Set()).add(e);
        tryNext();
      };
      up.once('timeout', () => failed('connect timed out'));
      up.once('error', (err: NodeJS.ErrnoException) => failed(err.code ?? err.message));
      up.once('connect', () => {
        up.removeAllListeners();
        up.setTimeout(0);
        ctx.health.succeeded(e);
        e.active++;
        conn.endpoint = e;
        client.off('close', clientGone);
        this.#relay(conn, client, up);
      });
    };
    tryNext();
  }

  #relay(conn: TcpConn, client: net.Socket, up: net.Socket): void {
    const idle = this.#ctx.options.tcpIdleMs;
    let closed = 0;
    const done = (): void => {
      if (++closed === 2) this.#finish(conn);
    };
    pipe(client, up);
    pipe(up, client);
    const timeout = (): void => {
      client.destroy();
      up.destroy();
    };
    client.setTimeout(idle, timeout);
    up.setTimeout(idle, timeout);
    client.on('close', done);
    up.on('close', done);
    client.resume();
  }

  #finish(conn: TcpConn): void {
    if (!this.conns.delete(conn)) return;
    const c = conn.counters;
    c.active--;
    if (conn.upstream !== undefined) {
      c.bytesToEndpoints += conn.upstream.bytesWritten;
      c.bytesToClients += conn.client.bytesWritten;
    }
    const e = conn.endpoint;
    if (e !== undefined) {
      e.active--;
      this.#ctx.released(e);
    }
  }
}

/**
 * Copies `from` into `to`: pauses `from` while `to` holds a full write
 * buffer, ends `to` when `from` ends (half-close), and passes a reset on.
 */
function pipe(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => {
    if (!to.destroyed) to.end();
  });
  from.on('error', (err: NodeJS.ErrnoException) => {
    if (to.destroyed) return;
    if (err.code === 'ECONNRESET') to.resetAndDestroy();
    else to.destroy();
  });
  from.on('close', () => {
    // Closed without error after both directions finished, or destroyed by us: make sure the peer follows.
    if (!to.destroyed && to.writableEnded && to.readableEnded) to.destroy();
  });
}
