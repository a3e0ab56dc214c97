// The forwarder of one process: takes a whole table, opens the listeners
// it gains, updates the endpoints of those it keeps, stops accepting on
// those it loses, and lets connections to anything that went away drain
// for a grace period. A table is applied in full or reported per listener:
// every listener that could not bind is named in the result.
import type { Logger } from '../../lib/log.ts';
import { AddressSet } from './address-match.ts';
import { AffinityTable } from './balancer.ts';
import { HealthTracker, type EndpointState } from './health.ts';
import { counterNames, defaultEngineOptions, ListenerState, newCounters, type EngineOptions, type ForwardContext, type ServiceCounters } from './listener-state.ts';
import { listenerKey, type ForwarderTable, type ListenerSpec } from './table.ts';
import { NativeRelay, NativeTcpListener, relayModule } from './native-tcp.ts';
import { TcpListener } from './tcp-forward.ts';
import { UdpListener } from './udp-forward.ts';
import { NativeUdpListener, NativeUdpRelay, udpRelayModule } from './native-udp.ts';
import { KproxyError } from '../../lib/errors.ts';

/** Part of a table: listeners to open or update, keys of listeners to close. */
export interface ListenerDelta {
  /** Node-local client ranges, when they change. */
  readonly clusterSources?: readonly string[];
  readonly upsert: readonly ListenerSpec[];
  readonly remove: readonly string[];
}

/** One endpoint of one listener, live. */
export interface ListenerEndpointReport {
  readonly key: string;
  /** Open connections (TCP) or flows (UDP) of this listener to it. */
  readonly open: number;
  /** False: it left the listener's routes and its connections drain. */
  readonly inRoutes: boolean;
  readonly ejected: boolean;
  readonly ejectedForMs: number;
  /** Failed connects in a row. */
  readonly failures: number;
  readonly lastError: string;
}

/** The live state of one listener in one process. */
export interface ListenerReport {
  readonly key: string;
  readonly accepting: boolean;
  readonly endpoints: readonly ListenerEndpointReport[];
  /** Connections waiting for an endpoint's connect. */
  readonly connecting: number;
  /** Clients held without an answer (dropped). */
  readonly held: number;
}

export interface ApplyResult {
  /** Listeners that could not be opened, with the reason (e.g. EADDRNOTAVAIL). */
  readonly failed: readonly { readonly key: string; readonly error: string }[];
  readonly listeners: number;
}

/** One endpoint as seen by this process, for explain and metrics. */
export interface EndpointReport {
  readonly key: string;
  readonly active: number;
  readonly ejected: boolean;
  readonly ejectedForMs: number;
  readonly failures: number;
  readonly lastError: string;
  /** Listeners whose routes still name it; 0 = draining. */
  readonly uses: number;
}

export interface EngineSnapshot {
  /** Counters per "PROTOCOL service" (closed and open connections). */
  readonly services: Record<string, ServiceCounters>;
  /** Ejected endpoints per "PROTOCOL service". */
  readonly ejected: Record<string, number>;
  readonly endpoints: readonly EndpointReport[];
  /** Listeners accepting now. */
  readonly listening: number;
  /** Open TCP connections and UDP flows. */
  readonly open: number;
  /** Bytes accepted from one side and not yet handed to the other's socket (back-pressure bounds it). */
  readonly buffered: number;
  /** Which relays this process uses: the native ones, or Node's sockets. */
  readonly relay: 'native' | 'node';
}

type UdpLike = UdpListener | NativeUdpListener;
type Listener = TcpListener | NativeTcpListener | UdpLike;

function isUdp(l: Listener): l is UdpLike {
  return l instanceof UdpListener || l instanceof NativeUdpListener;
}

export class Engine {
  readonly options: EngineOptions;
  readonly #log: Logger;
  readonly #health: HealthTracker;
  readonly #listeners = new Map<string, Listener>();
  /** Listeners removed from the table whose connections still drain. */
  readonly #draining = new Set<Listener>();
  readonly #counters = new Map<string, ServiceCounters>();
  readonly #affinity = new Map<string, AffinityTable>();
  readonly #ctx: ForwardContext;
  #sweeper: NodeJS.Timeout | undefined;
  #stopped = false;
  readonly #relay: NativeRelay | undefined;
  readonly #udpRelay: NativeUdpRelay | undefined;

  constructor(log: Logger, options: Partial<EngineOptions> = {}, now: () => number = Date.now) {
    this.options = { ...defaultEngineOptions, ...options };
    this.#log = log;
    this.#health = new HealthTracker(this.options.health, now);
    const engine = this;
    this.#ctx = {
      options: this.options,
      health: this.#health,
      log,
      clusterSources: new AddressSet([]),
      countersFor: (protocol, service) => {
        const key = `${protocol} ${service}`;
        let c = engine.#counters.get(key);
        if (c === undefined) {
          c = newCounters();
          engine.#counters.set(key, c);
        }
        return c;
      },
      affinityFor: (service, seconds) => {
        if (seconds === 0) return undefined;
        let a = engine.#affinity.get(service);
        if (a === undefined || a.timeoutMs !== seconds * 1000) {
          a = new AffinityTable(seconds);
          engine.#affinity.set(service, a);
        }
        return a;
      },
      released: () => { /* forgotten at the next sweep */ },
    };
    if (this.options.relay !== 'node') {
      const tcp = relayModule();
      const udp = udpRelayModule();
      const missing = tcp instanceof Error ? tcp : udp instanceof Error ? udp : undefined;
      if (missing !== undefined) {
        if (this.options.relay === 'native') throw new KproxyError('KPROXY_FORWARDER_FAILED', missing.message);
        log.info({ reason: missing.message }, 'traffic is relayed through Node.js sockets');
      } else {
        this.#relay = new NativeRelay(tcp as Exclude<typeof tcp, Error>, this.#ctx);
        this.#udpRelay = new NativeUdpRelay(udp as Exclude<typeof udp, Error>, this.#ctx);
      }
    }
    this.#sweeper = setInterval(() => this.#sweep(), 1000);
    this.#sweeper.unref();
  }

  get health(): HealthTracker {
    return this.#health;
  }

  /**
   * Brings the listeners in line with `table` (already validated). `adopt`
   * holds listening sockets opened elsewhere for new TCP listeners (by key);
   * the engine owns them from here on.
   */
  async apply(table: ForwarderTable, adopt: ReadonlyMap<string, number> = new Map(), closeFd: (fd: number) => void = () => {}): Promise<ApplyResult> {
    const wanted = new Set(table.listeners.map(listenerKey));
    const remove = [...this.#listeners.keys()].filter((k) => !wanted.has(k));
    return this.#change(table.clusterSources, table.listeners, remove, adopt, closeFd, true);
  }

  /**
   * Changes part of the table: opens or updates the listeners of `delta.upsert`
   * (already validated), closes those of `delta.remove`, and takes new
   * node-local sources when given. Everything else stays as it is.
   */
  async update(delta: ListenerDelta, adopt: ReadonlyMap<string, number> = new Map(), closeFd: (fd: number) => void = () => {}): Promise<ApplyResult> {
    return this.#change(delta.clusterSources, delta.upsert, delta.remove, adopt, closeFd, false);
  }

  async #change(
    clusterSources: readonly string[] | undefined, upsert: readonly ListenerSpec[], remove: readonly string[],
    adopt: ReadonlyMap<string, number>, closeFd: (fd: number) => void, everything: boolean,
  ): Promise<ApplyResult> {
    if (this.#stopped) throw new Error('the forwarder is stopping');
    if (clusterSources !== undefined) this.#ctx.clusterSources = new AddressSet(clusterSources);
    for (const key of remove) {
      const l = this.#listeners.get(key);
      if (l === undefined) continue;
      this.#listeners.delete(key);
      this.#retire(l);
    }
    const failed: { key: string; error: string }[] = [];
    const opening: Promise<void>[] = [];
    const taken = new Set<string>();
    const touched: Listener[] = [];
    for (const spec of upsert) {
      const key = listenerKey(spec);
      let l = this.#listeners.get(key);
      if (l !== undefined) {
        l.state.update(spec);
        touched.push(l);
        if (isUdp(l)) opening.push(l.listen().catch((e: Error) => { failed.push({ key, error: e.message }); }));
        continue;
      }
      const state = new ListenerState(spec, this.#ctx);
      if (spec.protocol === 'UDP') l = this.#udpRelay ? new NativeUdpListener(state, this.#udpRelay) : new UdpListener(state, this.#ctx);
      else if (this.#relay) {
        l = new NativeTcpListener(state, this.#relay, adopt.get(key));
        if (adopt.has(key)) taken.add(key);
      }
      else l = new TcpListener(state, this.#ctx);
      this.#listeners.set(key, l);
      const opened = l;
      opening.push(opened.listen().catch((e: NodeJS.ErrnoException) => {
        failed.push({ key, error: e.code ?? e.message });
        this.#listeners.delete(key);
        opened.state.close();
      }));
      // Bind in bounded batches: thousands of listens in flight at once only queue in libuv.
      if (opening.length >= 512) await Promise.all(opening.splice(0));
    }
    await Promise.all(opening);
    // Passed sockets no listener took (a listener that already existed, or no native relay here).
    for (const [key, fd] of adopt) if (!taken.has(key) || failed.some((f) => f.key === key)) closeFd(fd);
    this.#markDraining(everything ? this.#listeners.values() : touched);
    this.#health.sweep();
    return { failed, listeners: this.#listeners.size };
  }

  /**
   * The live state of some listeners, for `explain`: per endpoint of their
   * routes, this listener's open connections to it and its health here;
   * connections still open to endpoints that left the routes (draining).
   */
  describe(keys: readonly string[]): ListenerReport[] {
    const now = this.#health.now();
    const out: ListenerReport[] = [];
    for (const key of keys) {
      const live = this.#listeners.get(key);
      const draining = [...this.#draining].filter((l) => l.state.key === key);
      if (live === undefined && draining.length === 0) continue;
      const perEndpoint = new Map<string, number>();
      let connecting = 0;
      let held = 0;
      for (const l of live ? [live, ...draining] : draining) {
        if (isUdp(l)) {
          for (const f of l.flows.values()) perEndpoint.set(f.endpoint.key, (perEndpoint.get(f.endpoint.key) ?? 0) + 1);
          continue;
        }
        for (const c of l.conns) {
          if (c.endpoint !== undefined) perEndpoint.set(c.endpoint.key, (perEndpoint.get(c.endpoint.key) ?? 0) + 1);
          else if (c.held) held++;
          else connecting++;
        }
      }
      const inRoutes = live ? live.state.endpointKeys() : new Set<string>();
      const endpoints: ListenerEndpointReport[] = [...new Set([...inRoutes, ...perEndpoint.keys()])].sort().map((k) => {
        const h = this.#health.endpoints.get(k);
        return {
          key: k, open: perEndpoint.get(k) ?? 0, inRoutes: inRoutes.has(k), ejected: h?.ejected(now) ?? false,
          ejectedForMs: h ? Math.max(0, h.ejectedUntil - now) : 0, failures: h?.failures ?? 0, lastError: h?.lastError ?? '',
        };
      });
      out.push({ key, accepting: live?.accepting ?? false, endpoints, connecting, held });
    }
    return out;
  }

  /** Counters, ejections and endpoint states of this process. */
  snapshot(withEndpoints = true): EngineSnapshot {
    const now = this.#health.now();
    // Service ports that never saw a client report nothing: at 10,000 Services most are idle.
    const services: Record<string, ServiceCounters> = {};
    for (const [k, c] of this.#counters) if (counterNames.some((n) => c[n] !== 0)) services[k] = { ...c };
    let open = 0;
    let listening = 0;
    let buffered = this.#relay?.buffered() ?? 0;
    for (const l of this.#all()) {
      if (this.#listeners.get(l.state.key) === l && l.accepting) listening++;
      if ((isUdp(l) ? l.flows.size : l.conns.size) === 0) continue;
      const k = `${l.state.spec.protocol} ${l.state.spec.service}`;
      const c = (services[k] ??= { ...(this.#counters.get(k) ?? newCounters()) });
      if (!isUdp(l)) {
        open += l.conns.size;
        const b = l.openBytes();
        c.bytesToEndpoints += b.toEndpoints;
        c.bytesToClients += b.toClients;
        buffered += b.buffered;
      } else {
        open += l.flows.size;
        for (const f of l.flows.values()) {
          c.bytesToEndpoints += f.bytesToEndpoints;
          c.bytesToClients += f.bytesToClients;
        }
      }
    }
    const ejected: Record<string, number> = {};
    for (const l of this.#listeners.values()) {
      const k = `${l.state.spec.protocol} ${l.state.spec.service}`;
      const keys = new Set<string>();
      for (const e of l.state.remote.endpoints) if (e.ejected(now)) keys.add(e.key);
      for (const e of l.state.fromCluster?.endpoints ?? []) if (e.ejected(now)) keys.add(e.key);
      if (keys.size > 0) ejected[k] = Math.max(ejected[k] ?? 0, keys.size);
    }
    const endpoints = !withEndpoints ? [] : [...this.#health.endpoints.values()].map((e) => ({
      key: e.key, active: e.active, ejected: e.ejected(now), ejectedForMs: Math.max(0, e.ejectedUntil - now),
      failures: e.failures, lastError: e.lastError, uses: e.uses,
    }));
    return { services, ejected, endpoints, listening, open, buffered, relay: this.#relay ? 'native' : 'node' };
  }

  /** Stops accepting on every listener (a successor took over); open connections go on. */
  stopAccepting(): void {
    for (const l of this.#listeners.values()) l.stopAccepting();
  }

  /** Open connections and flows, draining ones included. */
  openConnections(): number {
    let n = 0;
    for (const l of this.#all()) n += isUdp(l) ? l.flows.size : l.conns.size;
    return n;
  }

  /**
   * Stops accepting, waits up to `graceMs` for open connections to finish,
   * then closes what is left with a reset.
   */
  async stop(graceMs: number): Promise<void> {
    this.#stopped = true;
    this.stopAccepting();
    const deadline = Date.now() + graceMs;
    while (this.openConnections() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const l of this.#all()) this.#closeAll(l);
    this.#relay?.destroy();
    this.#udpRelay?.destroy();
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  *#all(): Iterable<Listener> {
    yield* this.#listeners.values();
    yield* this.#draining;
  }

  #retire(l: Listener): void {
    l.stopAccepting();
    l.state.close();
    const deadline = this.#health.now() + this.options.drainGraceMs;
    if (isUdp(l)) {
      // UDP flows of a removed Service end at once, as the kernel modes clear their conntrack entries.
      l.closeFlows();
    } else {
      for (const c of l.conns) c.drainDeadline = deadline;
      if (l.conns.size > 0) this.#draining.add(l);
    }
  }

  /** Connections whose endpoint left their listener's routes get a drain deadline. */
  #markDraining(listeners: Iterable<Listener>): void {
    const deadline = this.#health.now() + this.options.drainGraceMs;
    for (const l of listeners) {
      const keep = l.state.endpointKeys();
      if (isUdp(l)) {
        // As the kernel modes delete a removed endpoint's conntrack entries: at once.
        l.endFlowsExcept(keep);
      } else {
        for (const c of l.conns) {
          if (c.endpoint === undefined) continue; // connecting, or held (dropped): their own deadlines
          const gone = !keep.has(c.endpoint.key);
          if (gone && c.drainDeadline === 0) c.drainDeadline = deadline;
          else if (!gone) c.drainDeadline = 0;
        }
      }
    }
  }

  #closeAll(l: Listener): void {
    if (isUdp(l)) l.closeFlows();
    else for (const c of l.conns) c.abort();
  }

  #sweep(): void {
    const now = this.#health.now();
    for (const l of this.#all()) {
      if (isUdp(l)) l.sweep(now);
      else {
        for (const c of l.conns) if (c.drainDeadline !== 0 && now >= c.drainDeadline) c.abort();
        if (l.conns.size === 0) this.#draining.delete(l);
      }
    }
    for (const a of this.#affinity.values()) a.sweep(now);
    this.#health.sweep();
    this.#logEjections(now);
  }

  readonly #reportedEjections = new Set<EndpointState>();

  #logEjections(now: number): void {
    for (const e of this.#health.endpoints.values()) {
      const out = e.ejected(now);
      if (out && !this.#reportedEjections.has(e)) {
        this.#reportedEjections.add(e);
        this.#log.warn({ endpoint: e.key, forMs: e.ejectedUntil - now, error: e.lastError }, 'endpoint failed repeatedly; skipping it for a while');
      } else if (!out && this.#reportedEjections.has(e)) {
        this.#reportedEjections.delete(e);
      }
    }
  }
}
