// What one forwarding process knows of each endpoint: open connections (for
// least-connections) and passive health. An endpoint whose connects fail
// `threshold` times in a row is ejected (skipped) for a back-off period;
// after it, one connect is let through: success clears the record, failure
// ejects it again for twice as long (up to a cap).

export interface HealthOptions {
  /** Failed connects in a row that eject an endpoint. */
  readonly threshold: number;
  /** First ejection, in ms; doubles with each ejection in a row. */
  readonly ejectMs: number;
  /** Longest ejection, in ms. */
  readonly maxEjectMs: number;
}

export const defaultHealth: HealthOptions = { threshold: 3, ejectMs: 5_000, maxEjectMs: 60_000 };

export class EndpointState {
  readonly key: string;
  readonly ip: string;
  readonly port: number;
  /** Open connections (TCP) or flows (UDP) to it from this process. */
  active = 0;
  /** Failed connects in a row. */
  failures = 0;
  /** Ejections in a row (the back-off exponent). */
  ejections = 0;
  /** Skipped until this time (ms, the health clock); 0 = never ejected. */
  ejectedUntil = 0;
  /** The error of the last failed connect, for explain. */
  lastError = '';
  /** Listeners whose routes name it (refcount, so it is forgotten when unused). */
  uses = 0;

  constructor(key: string, ip: string, port: number) {
    this.key = key;
    this.ip = ip;
    this.port = port;
  }

  ejected(now: number): boolean {
    return now < this.ejectedUntil;
  }
}

export class HealthTracker {
  readonly options: HealthOptions;
  readonly #now: () => number;
  /** Every endpoint some listener uses, or that still has open connections. */
  readonly endpoints = new Map<string, EndpointState>();

  constructor(options: HealthOptions = defaultHealth, now: () => number = Date.now) {
    this.options = options;
    this.#now = now;
  }

  now(): number {
    return this.#now();
  }

  get(key: string, ip: string, port: number): EndpointState {
    let e = this.endpoints.get(key);
    if (e === undefined) {
      e = new EndpointState(key, ip, port);
      this.endpoints.set(key, e);
    }
    return e;
  }

  /** A connect (or a UDP exchange) succeeded: the endpoint is healthy. */
  succeeded(e: EndpointState): void {
    e.failures = 0;
    e.ejections = 0;
    e.ejectedUntil = 0;
  }

  /** A connect failed. Returns true when this failure ejected the endpoint. */
  failed(e: EndpointState, error: string): boolean {
    e.lastError = error;
    const now = this.#now();
    if (e.ejected(now)) return false;
    e.failures++;
    // Back from an ejection, one failure is enough to go out again.
    const probation = e.ejections > 0;
    if (e.failures < this.options.threshold && !probation) return false;
    e.ejections++;
    e.failures = 0;
    e.ejectedUntil = now + Math.min(this.options.ejectMs * 2 ** (e.ejections - 1), this.options.maxEjectMs);
    return true;
  }

  /** Forgets endpoints no listener names and no connection uses. */
  sweep(): void {
    for (const [k, e] of this.endpoints) if (e.uses === 0 && e.active === 0) this.endpoints.delete(k);
  }
}
