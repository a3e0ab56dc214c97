// What every listener of one forwarding process holds besides its socket:
// its spec, the endpoint pools of its routes, its source ranges, and the
// counters of its Service port. TCP and UDP listeners both build on it.
import type { Logger } from '../../lib/log.ts';
import { AddressSet } from './address-match.ts';
import { AffinityTable, Pool } from './balancer.ts';
import type { EndpointState, HealthOptions, HealthTracker } from './health.ts';
import { endpointKey, listenerKey, refusesAll, type ListenerSpec, type Route, type Verdict } from './table.ts';

export interface EngineOptions {
  /** One connect attempt per entry, each with this timeout (ms): kube-proxy's old 250/500/1000/2000. */
  readonly connectTimeoutsMs: readonly number[];
  readonly health: HealthOptions;
  /** How long connections to a removed endpoint (or a removed listener) may stay open, ms. */
  readonly drainGraceMs: number;
  /** A TCP connection with no traffic either way for this long is closed, ms. */
  readonly tcpIdleMs: number;
  /** A UDP flow with no datagram either way for this long is forgotten, ms. */
  readonly udpIdleMs: number;
  /** Share listeners with other processes (this one's other workers, a successor) through SO_REUSEPORT. */
  readonly reusePort: boolean;
  /** Listen backlog of TCP listeners. */
  readonly backlog: number;
  /**
   * How traffic is relayed: `native` (the C relays: splice for TCP), `node`
   * (Node's sockets), or `auto` (native when the addon is built).
   */
  readonly relay: 'auto' | 'native' | 'node';
}

export const defaultEngineOptions: EngineOptions = {
  connectTimeoutsMs: [250, 500, 1000, 2000],
  health: { threshold: 3, ejectMs: 5_000, maxEjectMs: 60_000 },
  drainGraceMs: 30_000,
  tcpIdleMs: 3_600_000,
  udpIdleMs: 30_000,
  reusePort: true,
  backlog: 4096,
  relay: 'auto',
};

/** Counters of one Service port and protocol in one process (summed over processes for metrics). */
export interface ServiceCounters {
  connections: number;
  active: number;
  bytesToEndpoints: number;
  bytesToClients: number;
  connectFailures: number;
  retries: number;
  /** Connections or datagrams refused (no endpoint could be reached, or none exists). */
  refused: number;
  /** Connections or datagrams dropped (source range, or no endpoint for this client under a Local policy). */
  dropped: number;
}

export const counterNames = ['connections', 'active', 'bytesToEndpoints', 'bytesToClients', 'connectFailures', 'retries', 'refused', 'dropped'] as const;

export function newCounters(): ServiceCounters {
  return { connections: 0, active: 0, bytesToEndpoints: 0, bytesToClients: 0, connectFailures: 0, retries: 0, refused: 0, dropped: 0 };
}

export interface ForwardContext {
  readonly options: EngineOptions;
  readonly health: HealthTracker;
  readonly log: Logger;
  /** The current table's node-local client ranges. */
  clusterSources: AddressSet;
  /** Counters per "PROTOCOL service". */
  countersFor(protocol: string, service: string): ServiceCounters;
  affinityFor(service: string, seconds: number): AffinityTable | undefined;
  /** Called when a connection or flow to `e` ends, so unused endpoints can be forgotten. */
  released(e: EndpointState): void;
}

/** Where a new connection from one client goes: a pool to pick from, or a verdict. */
export type Decision = { pool: Pool } | { verdict: Verdict };

export class ListenerState {
  readonly key: string;
  spec: ListenerSpec;
  remote!: Pool;
  fromCluster: Pool | undefined;
  ranges: AddressSet | undefined;
  counters: ServiceCounters;
  readonly #ctx: ForwardContext;

  constructor(spec: ListenerSpec, ctx: ForwardContext) {
    this.key = listenerKey(spec);
    this.spec = spec;
    this.#ctx = ctx;
    this.counters = ctx.countersFor(spec.protocol, spec.service);
    this.#build(spec);
  }

  /** Takes a new spec for the same address, port and protocol. */
  update(spec: ListenerSpec): void {
    this.#release();
    this.spec = spec;
    this.counters = this.#ctx.countersFor(spec.protocol, spec.service);
    this.#build(spec);
  }

  /** Lets go of the endpoints (the listener is gone). */
  close(): void {
    this.#release();
  }

  /** Every endpoint a new connection may go to. */
  endpointKeys(): Set<string> {
    const keys = new Set(this.remote.endpoints.map((e) => e.key));
    for (const e of this.fromCluster?.endpoints ?? []) keys.add(e.key);
    return keys;
  }

  /** Whether every client would be refused: no endpoint in any route, and refusal as the verdict. */
  refusesAll(): boolean {
    return refusesAll(this.spec);
  }

  decide(clientIP: string): Decision {
    if (this.ranges !== undefined && !this.ranges.has(clientIP)) return { verdict: 'drop' };
    // The node reaching one of its own Service addresses sends from that address.
    const useLocal = this.fromCluster !== undefined && (clientIP === this.spec.ip || this.#ctx.clusterSources.has(clientIP));
    const pool = useLocal ? this.fromCluster! : this.remote;
    if (pool.endpoints.length === 0) return { verdict: (useLocal ? this.spec.fromCluster! : this.spec.remote).whenEmpty };
    return { pool };
  }

  #pool(route: Route): Pool {
    const eps = route.endpoints.map((e) => {
      const s = this.#ctx.health.get(endpointKey(e), e.ip, e.port);
      s.uses++;
      return s;
    });
    return new Pool(this.spec.algorithm, eps, this.#ctx.affinityFor(this.spec.service, this.spec.affinitySeconds));
  }

  #build(spec: ListenerSpec): void {
    this.remote = this.#pool(spec.remote);
    this.fromCluster = spec.fromCluster ? this.#pool(spec.fromCluster) : undefined;
    this.ranges = spec.sourceRanges.length > 0 ? new AddressSet(spec.sourceRanges) : undefined;
  }

  #release(): void {
    for (const p of [this.remote, this.fromCluster]) {
      for (const e of p?.endpoints ?? []) {
        e.uses--;
        this.#ctx.released(e);
      }
    }
  }
}
