// What the backend needs of a forwarder, and a forwarder that only keeps
// its table: for a backend whose Service addresses live elsewhere than
// this process (diff's scratch namespace) and for the fake dataplane of
// the shared tests. It validates like the real one and opens no socket.
import type { ApplyResult, ListenerReport } from './engine.ts';
import type { ForwarderSnapshot } from './forwarder.ts';
import { listenerKey, refusesAll, validateTable, type ForwarderTable, type ListenerSpec } from './table.ts';

export interface ForwarderLike {
  apply(table: unknown): Promise<ApplyResult>;
  update(delta: { clusterSources?: unknown; upsert: unknown; remove: unknown }): Promise<ApplyResult>;
  /** Listeners not open now, with the reason. */
  readonly failed: ReadonlyMap<string, string>;
  readonly table: ForwarderTable;
  readonly pids: readonly number[];
  snapshot(opts?: { endpoints?: boolean }): Promise<ForwarderSnapshot>;
  describe(keys: readonly string[]): Promise<ListenerReport[]>;
  expectedListening(): number;
  handover(waitMs: number, drainMs: number): Promise<{ successor: boolean; waitedMs: number }>;
  stop(graceMs: number): Promise<void>;
}

export class TableForwarder implements ForwarderLike {
  readonly #listeners = new Map<string, ListenerSpec>();
  #clusterSources: readonly string[] = [];
  readonly failed: ReadonlyMap<string, string> = new Map();
  readonly pids: readonly number[] = [];

  get table(): ForwarderTable {
    return { clusterSources: this.#clusterSources, listeners: [...this.#listeners.values()] };
  }

  /** The listener serving this address, port and protocol, if any. */
  listener(protocol: string, ip: string, port: number): ListenerSpec | undefined {
    return this.#listeners.get(listenerKey({ protocol: protocol as ListenerSpec['protocol'], ip, port }));
  }

  get clusterSources(): readonly string[] {
    return this.#clusterSources;
  }

  async apply(input: unknown): Promise<ApplyResult> {
    const t = validateTable(input);
    this.#listeners.clear();
    for (const l of t.listeners) this.#listeners.set(listenerKey(l), l);
    this.#clusterSources = t.clusterSources;
    return { failed: [], listeners: this.#listeners.size };
  }

  async update(input: { clusterSources?: unknown; upsert: unknown; remove: unknown }): Promise<ApplyResult> {
    const t = validateTable({ clusterSources: input.clusterSources ?? this.#clusterSources, listeners: input.upsert });
    if (!Array.isArray(input.remove)) throw new TypeError('remove must be a list');
    for (const k of input.remove as string[]) this.#listeners.delete(k);
    for (const l of t.listeners) this.#listeners.set(listenerKey(l), l);
    this.#clusterSources = t.clusterSources;
    return { failed: [], listeners: this.#listeners.size };
  }

  async snapshot(): Promise<ForwarderSnapshot> {
    return { services: {}, ejected: {}, endpoints: [], listening: this.expectedListening(), open: 0, buffered: 0, workers: 0, relay: 'none' };
  }

  async describe(): Promise<ListenerReport[]> {
    return [];
  }

  expectedListening(): number {
    let n = 0;
    for (const l of this.#listeners.values()) if (!(l.protocol === 'UDP' && refusesAll(l))) n++;
    return n;
  }

  async handover(): Promise<{ successor: boolean; waitedMs: number }> {
    return { successor: false, waitedMs: 0 };
  }

  async stop(): Promise<void> {}
}
