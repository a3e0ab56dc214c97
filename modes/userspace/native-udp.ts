// UDP through the native relay (native/udp-relay.c): datagrams move in C;
// here, once per new flow, the route, verdict and endpoint pick (the same
// code as udp-forward.ts), health at the first answer and on an ICMP
// error, and the counters when a flow ends.
import { loadAddon } from '../../lib/addon.ts';
import { forwarderAddon } from './addon-path.ts';
import { ListenerSlots } from './listener-slots.ts';
import { constants } from 'node:os';
import type { EndpointState } from './health.ts';
import type { ForwardContext, ListenerState, ServiceCounters } from './listener-state.ts';

type Handle = object;

interface UdpModule {
  createUdpRelay(onNew: (listener: number, clientIP: string, clientPort: number) => number, onAnswer: (flow: number) => void,
    onClosed: (flow: number, up: number, down: number, errno: number) => void, idleMs: number): Handle;
  udpListen(h: Handle, listener: number, host: string, port: number, reusePort: boolean, recvBufferSize: number): void;
  udpCloseListener(h: Handle, listener: number): void;
  udpFlowOpen(h: Handle, host: string, port: number): number;
  udpFlowClose(h: Handle, flow: number): [number, number] | undefined;
  udpFlowBytes(h: Handle, flow: number): [number, number] | undefined;
  udpDestroy(h: Handle): void;
}

/** The native UDP relay, or why it cannot be used (without it UDP goes through Node's sockets). */
export function udpRelayModule(): UdpModule | Error {
  return loadAddon<UdpModule>(forwarderAddon, 'forwarder', ['createUdpRelay']);
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));

export class NativeFlow {
  readonly id: number;
  readonly listener: NativeUdpListener;
  readonly endpoint: EndpointState;
  readonly counters: ServiceCounters;
  drainDeadline = 0;

  constructor(id: number, listener: NativeUdpListener, endpoint: EndpointState) {
    this.id = id;
    this.listener = listener;
    this.endpoint = endpoint;
    this.counters = listener.state.counters;
  }

  get bytesToEndpoints(): number {
    return this.listener.relay.bytes(this)[0];
  }

  get bytesToClients(): number {
    return this.listener.relay.bytes(this)[1];
  }
}

export class NativeUdpRelay {
  readonly #mod: UdpModule;
  readonly #ctx: ForwardContext;
  readonly #handle: Handle;
  readonly #listeners = new ListenerSlots<NativeUdpListener>();
  readonly #flows = new Map<number, NativeFlow>();

  constructor(mod: UdpModule, ctx: ForwardContext) {
    this.#mod = mod;
    this.#ctx = ctx;
    this.#handle = mod.createUdpRelay(
      (l, ip, port) => this.#newFlow(l, ip, port),
      (f) => this.#answered(f),
      (f, up, down, errno) => this.#closed(f, up, down, errno),
      ctx.options.udpIdleMs,
    );
  }

  listen(l: NativeUdpListener): number {
    const { ip, port } = l.state.spec;
    return this.#listeners.open(l, (id) => this.#mod.udpListen(this.#handle, id, ip, port, this.#ctx.options.reusePort, 0));
  }

  closeListener(id: number): void {
    this.#listeners.close(id, (x) => this.#mod.udpCloseListener(this.#handle, x));
  }

  close(f: NativeFlow): void {
    const bytes = this.#mod.udpFlowClose(this.#handle, f.id) ?? [0, 0];
    this.#finish(f, bytes[0], bytes[1]);
  }

  bytes(f: NativeFlow): [number, number] {
    return this.#mod.udpFlowBytes(this.#handle, f.id) ?? [0, 0];
  }

  destroy(): void {
    for (const f of this.#flows.values()) this.close(f);
    this.#mod.udpDestroy(this.#handle);
  }

  #newFlow(listenerId: number, ip: string, _port: number): number {
    const l = this.#listeners.get(listenerId);
    if (l === undefined) return 0;
    const st = l.state;
    const d = st.decide(ip);
    if ('verdict' in d) {
      // The socket is bound for other clients: this one's datagram is dropped.
      if (d.verdict === 'reject') st.counters.refused++;
      else st.counters.dropped++;
      return 0;
    }
    const now = this.#ctx.health.now();
    const e = d.pool.pick(ip, undefined, now);
    if (e === undefined) {
      st.counters.refused++;
      return 0;
    }
    const id = this.#mod.udpFlowOpen(this.#handle, e.ip, e.port);
    if (id < 0) {
      st.counters.connectFailures++;
      this.#ctx.health.failed(e, errnoNames.get(-id) ?? `errno ${-id}`);
      return 0;
    }
    const f = new NativeFlow(id, l, e);
    this.#flows.set(id, f);
    l.flows.set(id, f);
    e.active++;
    st.counters.connections++;
    st.counters.active++;
    d.pool.affinity?.remember(ip, e.key, now);
    return id;
  }

  #answered(id: number): void {
    const f = this.#flows.get(id);
    if (f !== undefined) this.#ctx.health.succeeded(f.endpoint);
  }

  #closed(id: number, up: number, down: number, errno: number): void {
    const f = this.#flows.get(id);
    if (f === undefined) return;
    if (errno !== 0) {
      // ECONNREFUSED: the endpoint's kernel sent port unreachable.
      f.counters.connectFailures++;
      this.#ctx.health.failed(f.endpoint, errnoNames.get(errno) ?? `errno ${errno}`);
    }
    this.#finish(f, up, down);
  }

  #finish(f: NativeFlow, up: number, down: number): void {
    if (!this.#flows.delete(f.id)) return;
    f.listener.flows.delete(f.id);
    const c = f.counters;
    c.active--;
    c.bytesToEndpoints += up;
    c.bytesToClients += down;
    f.endpoint.active--;
    this.#ctx.released(f.endpoint);
  }
}

export class NativeUdpListener {
  readonly state: ListenerState;
  readonly relay: NativeUdpRelay;
  readonly flows = new Map<number, NativeFlow>();
  #id = -1;

  constructor(state: ListenerState, relay: NativeUdpRelay) {
    this.state = state;
    this.relay = relay;
  }

  get accepting(): boolean {
    return this.#id >= 0;
  }

  /** Binds unless every client would be refused (then the kernel answers ICMP port unreachable). */
  async listen(): Promise<void> {
    if (this.state.refusesAll()) {
      this.stopAccepting();
      return;
    }
    if (this.#id < 0) this.#id = this.relay.listen(this);
  }

  stopAccepting(): void {
    if (this.#id < 0) return;
    this.relay.closeListener(this.#id);
    this.#id = -1;
  }

  closeFlows(): void {
    for (const f of this.flows.values()) this.relay.close(f);
  }

  /** Ends the flows whose endpoint is not in `keep` (it left the routes): the client's next datagram starts a flow elsewhere. */
  endFlowsExcept(keep: ReadonlySet<string>): void {
    for (const f of this.flows.values()) if (!keep.has(f.endpoint.key)) this.relay.close(f);
  }

  /** Flows past their drain deadline end here; idle ones end in the relay. */
  sweep(now: number): void {
    for (const f of this.flows.values()) if (f.drainDeadline !== 0 && now >= f.drainDeadline) this.relay.close(f);
  }
}
