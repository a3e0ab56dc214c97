// Picks the endpoint for a new connection: round robin, least connections,
// power of two choices or source-IP hash over the endpoints of one route,
// skipping ejected endpoints and those this connection already tried, with
// ClientIP affinity on top. When every untried endpoint is ejected they are
// tried anyway: an ejected endpoint may be back, and refusing is no better.
import type { Algorithm } from './table.ts';
import type { EndpointState } from './health.ts';

/** FNV-1a over the address text: the same client always hashes alike. */
export function hashAddress(ip: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < ip.length; i++) {
    h ^= ip.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** ClientIP affinity of one Service port: client address → endpoint, until it has been idle for the timeout. */
export class AffinityTable {
  readonly timeoutMs: number;
  readonly #entries = new Map<string, { key: string; expires: number }>();

  constructor(timeoutSeconds: number) {
    this.timeoutMs = timeoutSeconds * 1000;
  }

  get size(): number {
    return this.#entries.size;
  }

  lookup(client: string, now: number): string | undefined {
    const e = this.#entries.get(client);
    if (e === undefined) return undefined;
    if (e.expires <= now) {
      this.#entries.delete(client);
      return undefined;
    }
    return e.key;
  }

  /** Records (or refreshes) the client's endpoint, as `-m recent --set` does on each new connection. */
  remember(client: string, key: string, now: number): void {
    this.#entries.set(client, { key, expires: now + this.timeoutMs });
  }

  /** Drops expired entries; run now and then so idle clients do not pile up. */
  sweep(now: number): void {
    for (const [c, e] of this.#entries) if (e.expires <= now) this.#entries.delete(c);
  }
}

export class Pool {
  readonly algorithm: Algorithm;
  readonly endpoints: readonly EndpointState[];
  readonly affinity: AffinityTable | undefined;
  #cursor = 0;
  readonly #random: () => number;

  constructor(algorithm: Algorithm, endpoints: readonly EndpointState[], affinity?: AffinityTable, random: () => number = Math.random) {
    this.algorithm = algorithm;
    this.endpoints = endpoints;
    this.affinity = affinity;
    this.#random = random;
    // Start round robin at a random place, so workers and restarts do not all begin with the first endpoint.
    this.#cursor = endpoints.length > 0 ? Math.floor(random() * endpoints.length) : 0;
  }

  /**
   * The endpoint for a connection from `client`, or undefined when every
   * endpoint was tried. `tried` holds the ones that failed for this connection.
   */
  pick(client: string, tried: ReadonlySet<EndpointState> | undefined, now: number): EndpointState | undefined {
    const eps = this.endpoints;
    const n = eps.length;
    if (n === 0) return undefined;
    if (this.affinity !== undefined) {
      const key = this.affinity.lookup(client, now);
      if (key !== undefined) {
        const e = eps.find((x) => x.key === key);
        if (e !== undefined && !tried?.has(e) && !e.ejected(now)) return e;
      }
    }
    const usable = (e: EndpointState, ignoreEjection: boolean): boolean => !tried?.has(e) && (ignoreEjection || !e.ejected(now));
    return this.#choose(client, now, (e) => usable(e, false)) ?? this.#choose(client, now, (e) => usable(e, true));
  }

  #choose(client: string, now: number, ok: (e: EndpointState) => boolean): EndpointState | undefined {
    const eps = this.endpoints;
    const n = eps.length;
    switch (this.algorithm) {
      case 'rr':
        for (let i = 0; i < n; i++) {
          const e = eps[(this.#cursor + i) % n];
          if (ok(e)) {
            this.#cursor = (this.#cursor + i + 1) % n;
            return e;
          }
        }
        return undefined;
      case 'sh': {
        const start = hashAddress(client) % n;
        for (let i = 0; i < n; i++) {
          const e = eps[(start + i) % n];
          if (ok(e)) return e;
        }
        return undefined;
      }
      case 'lc': {
        // Ties go round robin, so equal endpoints share the load.
        let best: EndpointState | undefined;
        let at = 0;
        for (let i = 0; i < n; i++) {
          const e = eps[(this.#cursor + i) % n];
          if (ok(e) && (best === undefined || e.active < best.active)) {
            best = e;
            at = i;
          }
        }
        if (best !== undefined) this.#cursor = (this.#cursor + at + 1) % n;
        return best;
      }
      case 'p2c': {
        const a = this.#sample(ok);
        if (a === undefined) return undefined;
        const b = this.#sample(ok, a);
        if (b === undefined || a.active < b.active) return a;
        if (b.active < a.active) return b;
        return this.#random() < 0.5 ? a : b;
      }
    }
  }

  /** A random usable endpoint other than `not`: a few random probes, then a scan from a random place. */
  #sample(ok: (e: EndpointState) => boolean, not?: EndpointState): EndpointState | undefined {
    const eps = this.endpoints;
    const n = eps.length;
    for (let probe = 0; probe < 4; probe++) {
      const e = eps[Math.floor(this.#random() * n)];
      if (e !== not && ok(e)) return e;
    }
    const start = Math.floor(this.#random() * n);
    for (let i = 0; i < n; i++) {
      const e = eps[(start + i) % n];
      if (e !== not && ok(e)) return e;
    }
    return undefined;
  }
}
