// TCP through the native relay (native/tcp-relay.c): the listening
// sockets, accept, connect and the byte copying (splice through a pipe)
// run in C on this process's event loop; every decision stays here, in
// the same code paths as the Node socket relay (tcp-forward.ts): the
// route and verdict, the endpoint pick, retry on the next endpoint, health,
// affinity, counters.
import { loadAddon } from '../../lib/addon.ts';
import { forwarderAddon } from './addon-path.ts';
import { ListenerSlots } from './listener-slots.ts';
import { constants } from 'node:os';
import type { EndpointState } from './health.ts';
import type { ForwardContext, ListenerState, ServiceCounters } from './listener-state.ts';
import type { Pool } from './balancer.ts';

type Handle = object;

interface RelayModule {
  createRelay(onAccept: (listener: number, conn: number, clientIP: string) => void, onConnect: (conn: number, errno: number) => void,
    onClose: (conn: number, up: number, down: number, why: number) => void, idleMs: number): Handle;
  relayListen(h: Handle, listener: number, host: string, port: number, backlog: number, reusePort: boolean): void;
  relayAdopt(h: Handle, listener: number, fd: number): void;
  relayCloseListener(h: Handle, listener: number): void;
  relayConnect(h: Handle, conn: number, host: string, port: number, timeoutMs: number): number;
  relayReject(h: Handle, conn: number): void;
  relayHold(h: Handle, conn: number): void;
  relayAbort(h: Handle, conn: number): void;
  relayBytes(h: Handle, conn: number): [number, number] | undefined;
  relayStats(h: Handle): [number, number, number];
  relayDestroy(h: Handle): void;
}

/** The native relay, or why it cannot be used (without it TCP goes through Node's sockets). */
export function relayModule(): RelayModule | Error {
  return loadAddon<RelayModule>(forwarderAddon, 'forwarder', ['createRelay']);
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));
const ETIMEDOUT = constants.errno.ETIMEDOUT;

function connectError(errno: number): string {
  return errno === ETIMEDOUT ? 'connect timed out' : (errnoNames.get(errno) ?? `errno ${errno}`);
}

export class NativeConn {
  readonly id: number;
  readonly listener: NativeTcpListener;
  readonly counters: ServiceCounters;
  readonly clientIP: string;
  readonly pool: Pool | undefined;
  /** Held without an answer (a dropped client): not counted as active. */
  readonly held: boolean;
  tried: Set<EndpointState> | undefined;
  attempt = 0;
  pending: EndpointState | undefined;
  endpoint: EndpointState | undefined;
  drainDeadline = 0;

  constructor(id: number, listener: NativeTcpListener, clientIP: string, pool: Pool | undefined) {
    this.id = id;
    this.listener = listener;
    this.counters = listener.state.counters;
    this.clientIP = clientIP;
    this.pool = pool;
    this.held = pool === undefined;
  }

  abort(): void {
    this.listener.relay.abort(this);
  }
}

export class NativeRelay {
  readonly #mod: RelayModule;
  readonly #ctx: ForwardContext;
  readonly #handle: Handle;
  readonly #listeners = new ListenerSlots<NativeTcpListener>();
  readonly #conns = new Map<number, NativeConn>();

  constructor(mod: RelayModule, ctx: ForwardContext) {
    this.#mod = mod;
    this.#ctx = ctx;
    this.#handle = mod.createRelay(
      (l, c, ip) => this.#accept(l, c, ip),
      (c, err) => this.#connected(c, err),
      (c, up, down) => this.#closed(c, up, down),
      ctx.options.tcpIdleMs,
    );
  }

  /** Starts accepting for `l`: on `fd` (a listening socket the supervisor opened and passed) or on a socket of its own. */
  listen(l: NativeTcpListener, fd?: number): number {
    const { ip, port } = l.state.spec;
    return this.#listeners.open(l, (id) => {
      if (fd !== undefined) this.#mod.relayAdopt(this.#handle, id, fd);
      else this.#mod.relayListen(this.#handle, id, ip, port, this.#ctx.options.backlog, this.#ctx.options.reusePort);
    });
  }

  closeListener(id: number): void {
    this.#listeners.close(id, (x) => this.#mod.relayCloseListener(this.#handle, x));
  }

  abort(conn: NativeConn): void {
    const bytes = this.#mod.relayBytes(this.#handle, conn.id) ?? [0, 0];
    this.#mod.relayAbort(this.#handle, conn.id);
    this.#finish(conn, bytes[0], bytes[1]);
  }

  bytes(conn: NativeConn): [number, number] {
    return this.#mod.relayBytes(this.#handle, conn.id) ?? [0, 0];
  }

  /** Bytes sitting in the relay's pipes (in flight between the two sockets). */
  buffered(): number {
    return this.#mod.relayStats(this.#handle)[1];
  }

  destroy(): void {
    for (const c of this.#conns.values()) this.abort(c);
    this.#mod.relayDestroy(this.#handle);
  }

  #accept(listenerId: number, id: number, clientIP: string): void {
    const l = this.#listeners.get(listenerId);
    if (l === undefined) {
      this.#mod.relayReject(this.#handle, id);
      return;
    }
    const st = l.state;
    const d = st.decide(clientIP);
    if ('verdict' in d) {
      if (d.verdict === 'reject') {
        st.counters.refused++;
        this.#mod.relayReject(this.#handle, id);
        return;
      }
      // Dropped: the kernel modes never answer; the handshake is done here, so hold the client without an answer.
      st.counters.dropped++;
      const conn = new NativeConn(id, l, clientIP, undefined);
      conn.drainDeadline = this.#ctx.health.now() + Math.min(this.#ctx.options.tcpIdleMs, 120_000);
      this.#mod.relayHold(this.#handle, id);
      this.#conns.set(id, conn);
      l.conns.add(conn);
      return;
    }
    const conn = new NativeConn(id, l, clientIP, d.pool);
    this.#conns.set(id, conn);
    l.conns.add(conn);
    st.counters.connections++;
    st.counters.active++;
    this.#tryNext(conn);
  }

  #tryNext(conn: NativeConn): void {
    const ctx = this.#ctx;
    const timeouts = ctx.options.connectTimeoutsMs;
    for (;;) {
      const e = conn.pool!.pick(conn.clientIP, conn.tried, ctx.health.now());
      if (e === undefined || conn.attempt >= timeouts.length) {
        conn.counters.refused++;
        this.#mod.relayReject(this.#handle, conn.id);
        this.#finish(conn, 0, 0);
        return;
      }
      if (conn.attempt > 0) conn.counters.retries++;
      // Remembered at the pick, not at the connect: the client's next connections may be accepted before this one connects.
      conn.pool!.affinity?.remember(conn.clientIP, e.key, ctx.health.now());
      const r = this.#mod.relayConnect(this.#handle, conn.id, e.ip, e.port, timeouts[conn.attempt++]);
      if (r === 0) {
        conn.pending = e;
        return;
      }
      // Failed at once (no route, out of descriptors): the next endpoint.
      this.#failed(conn, e, -r);
    }
  }

  #failed(conn: NativeConn, e: EndpointState, errno: number): void {
    conn.counters.connectFailures++;
    this.#ctx.health.failed(e, connectError(errno));
    (conn.tried ??= new Set()).add(e);
  }

  #connected(id: number, err: number): void {
    const conn = this.#conns.get(id);
    const e = conn?.pending;
    if (conn === undefined || e === undefined) return;
    conn.pending = undefined;
    if (err !== 0) {
      this.#failed(conn, e, err);
      this.#tryNext(conn);
      return;
    }
    const ctx = this.#ctx;
    ctx.health.succeeded(e);
    e.active++;
    conn.endpoint = e;
  }

  #closed(id: number, up: number, down: number): void {
    const conn = this.#conns.get(id);
    if (conn !== undefined) this.#finish(conn, up, down);
  }

  #finish(conn: NativeConn, up: number, down: number): void {
    if (!this.#conns.delete(conn.id)) return;
    conn.listener.conns.delete(conn);
    if (conn.held) return;
    const c = conn.counters;
    c.active--;
    c.bytesToEndpoints += up;
    c.bytesToClients += down;
    const e = conn.endpoint;
    if (e !== undefined) {
      e.active--;
      this.#ctx.released(e);
    }
  }
}

export class NativeTcpListener {
  readonly state: ListenerState;
  readonly relay: NativeRelay;
  readonly conns = new Set<NativeConn>();
  #id = -1;
  /** A listening socket passed by the supervisor, taken by listen(). */
  #fd: number | undefined;

  constructor(state: ListenerState, relay: NativeRelay, fd?: number) {
    this.state = state;
    this.relay = relay;
    this.#fd = fd;
  }

  get accepting(): boolean {
    return this.#id >= 0;
  }

  async listen(): Promise<void> {
    if (this.#id >= 0) return;
    const fd = this.#fd;
    this.#fd = undefined;
    this.#id = this.relay.listen(this, fd);
  }

  stopAccepting(): void {
    if (this.#id < 0) return;
    this.relay.closeListener(this.#id);
    this.#id = -1;
  }

  openBytes(): { toEndpoints: number; toClients: number; buffered: number } {
    let toEndpoints = 0;
    let toClients = 0;
    for (const c of this.conns) {
      const [up, down] = this.relay.bytes(c);
      toEndpoints += up;
      toClients += down;
    }
    return { toEndpoints, toClients, buffered: 0 };
  }
}
