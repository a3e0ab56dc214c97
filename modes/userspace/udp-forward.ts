// UDP: one flow per client address and port. A flow owns a socket
// connected to its endpoint, so the endpoint's replies come back on it and
// are sent to the client from the listener's socket, i.e. from the Service
// address the client used. An ICMP error from the endpoint (port
// unreachable) fails the flow and counts against the endpoint's health;
// the client's next datagram starts a flow on another endpoint.
//
// A listener whose every route is empty with the verdict "reject" is not
// bound at all: with the address local and no socket on the port, the
// kernel answers each datagram with an ICMP port unreachable itself.
import dgram from 'node:dgram';
import type { EndpointState } from './health.ts';
import type { ForwardContext, ListenerState, ServiceCounters } from './listener-state.ts';

/** Largest UDP payload (65535 − IPv4 and UDP headers). */
const MAX_DATAGRAM = 65507;
/** Datagrams kept while a new flow's socket connects. */
const MAX_QUEUED = 64;

export class UdpFlow {
  readonly address: string;
  readonly port: number;
  readonly endpoint: EndpointState;
  readonly counters: ServiceCounters;
  readonly socket: dgram.Socket;
  lastSeen: number;
  bytesToEndpoints = 0;
  bytesToClients = 0;
  answered = false;
  ready = false;
  queue: Buffer[] = [];
  /** Set when the flow's endpoint left the table: the flow is closed at the next sweep. */
  drainDeadline = 0;

  constructor(address: string, port: number, endpoint: EndpointState, counters: ServiceCounters, socket: dgram.Socket, now: number) {
    this.address = address;
    this.counters = counters;
    this.port = port;
    this.endpoint = endpoint;
    this.socket = socket;
    this.lastSeen = now;
  }
}

export class UdpListener {
  readonly state: ListenerState;
  readonly flows = new Map<string, UdpFlow>();
  readonly #ctx: ForwardContext;
  #socket: dgram.Socket | undefined;

  constructor(state: ListenerState, ctx: ForwardContext) {
    this.state = state;
    this.#ctx = ctx;
  }

  get accepting(): boolean {
    return this.#socket !== undefined;
  }

  /** Binds the socket unless every client would be refused (then the kernel refuses). */
  async listen(): Promise<void> {
    if (this.state.refusesAll()) {
      this.stopAccepting();
      return;
    }
    if (this.#socket !== undefined) return;
    const { ip, port } = this.state.spec;
    const v6 = ip.includes(':');
    const socket = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', reusePort: this.#ctx.options.reusePort, ...(v6 ? { ipv6Only: true } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ address: ip, port, exclusive: true }, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', (e) => this.#ctx.log.error({ listener: this.state.key, err: e.message }, 'listener error'));
    socket.on('message', (msg, rinfo) => this.#datagram(msg, rinfo.address, rinfo.port));
    this.#socket = socket;
  }

  stopAccepting(): void {
    this.#socket?.close();
    this.#socket = undefined;
  }

  /** Forgets every flow (the listener is gone for good). */
  closeFlows(): void {
    for (const f of this.flows.values()) this.#end(f);
  }

  /** Ends the flows whose endpoint is not in `keep` (it left the routes): the client's next datagram starts a flow elsewhere. */
  endFlowsExcept(keep: ReadonlySet<string>): void {
    for (const f of this.flows.values()) if (!keep.has(f.endpoint.key)) this.#end(f);
  }

  /** Closes flows idle for longer than the timeout, and flows past their drain deadline. */
  sweep(now: number): void {
    const idle = this.#ctx.options.udpIdleMs;
    for (const f of this.flows.values()) {
      if (now - f.lastSeen >= idle || (f.drainDeadline !== 0 && now >= f.drainDeadline)) this.#end(f);
    }
  }

  #datagram(msg: Buffer, address: string, port: number): void {
    const key = `${address}|${port}`;
    const now = this.#ctx.health.now();
    let flow = this.flows.get(key);
    if (flow === undefined) {
      const st = this.state;
      const d = st.decide(address);
      if ('verdict' in d) {
        // The socket is bound for other clients: this one's datagram is dropped (no socket-level ICMP).
        if (d.verdict === 'reject') st.counters.refused++;
        else st.counters.dropped++;
        return;
      }
      const e = d.pool.pick(address, undefined, now);
      if (e === undefined) {
        st.counters.refused++;
        return;
      }
      flow = this.#open(key, address, port, e, now);
      d.pool.affinity?.remember(address, e.key, now);
    }
    flow.lastSeen = now;
    flow.bytesToEndpoints += msg.length;
    if (flow.ready) flow.socket.send(msg);
    else if (flow.queue.length < MAX_QUEUED) flow.queue.push(msg);
  }

  #open(key: string, address: string, port: number, e: EndpointState, now: number): UdpFlow {
    const st = this.state;
    const socket = dgram.createSocket({ type: e.ip.includes(':') ? 'udp6' : 'udp4' });
    const flow = new UdpFlow(address, port, e, st.counters, socket, now);
    this.flows.set(key, flow);
    e.active++;
    st.counters.connections++;
    st.counters.active++;
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // ECONNREFUSED: the endpoint's kernel sent port unreachable.
      st.counters.connectFailures++;
      this.#ctx.health.failed(e, err.code ?? err.message);
      this.#end(flow);
    });
    socket.on('message', (reply) => {
      if (!flow.answered) {
        flow.answered = true;
        this.#ctx.health.succeeded(e);
      }
      flow.lastSeen = this.#ctx.health.now();
      flow.bytesToClients += reply.length;
      if (reply.length <= MAX_DATAGRAM) this.#socket?.send(reply, flow.port, flow.address);
    });
    socket.connect(e.port, e.ip, () => {
      flow.ready = true;
      for (const m of flow.queue) socket.send(m);
      flow.queue = [];
    });
    return flow;
  }

  #end(f: UdpFlow): void {
    const key = `${f.address}|${f.port}`;
    if (this.flows.get(key) !== f) return;
    this.flows.delete(key);
    const c = f.counters;
    c.active--;
    c.bytesToEndpoints += f.bytesToEndpoints;
    c.bytesToClients += f.bytesToClients;
    f.endpoint.active--;
    this.#ctx.released(f.endpoint);
    try {
      f.socket.close();
    } catch {
      // already closed after an error
    }
  }
}
