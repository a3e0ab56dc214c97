// The messages between the forwarder's supervisor and its worker processes
// (Node IPC with structured-clone serialization).
import type { ApplyResult, EngineSnapshot, ListenerDelta, ListenerReport } from './engine.ts';
import type { EngineOptions } from './listener-state.ts';
import type { ForwarderTable } from './table.ts';

export type ToWorker =
  /** Listening sockets for these TCP listeners were just sent over the descriptor channel, in this order: keep them for the next apply. */
  | { readonly type: 'adopt'; readonly seq: number; readonly keys: readonly string[] }
  | { readonly type: 'apply'; readonly seq: number; readonly table: ForwarderTable }
  | { readonly type: 'update'; readonly seq: number; readonly delta: ListenerDelta }
  | { readonly type: 'describe'; readonly seq: number; readonly keys: readonly string[] }
  | { readonly type: 'snapshot'; readonly seq: number; readonly endpoints?: boolean }
  | { readonly type: 'stop-accepting'; readonly seq: number }
  | { readonly type: 'stop'; readonly seq: number; readonly graceMs: number };

/** A request before the supervisor numbers it. */
export type Request = ToWorker extends infer T ? (T extends { seq: number } ? Omit<T, 'seq'> : never) : never;

export type FromWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'applied'; readonly seq: number; readonly result: ApplyResult }
  | { readonly type: 'snapshot'; readonly seq: number; readonly snapshot: EngineSnapshot }
  | { readonly type: 'described'; readonly seq: number; readonly listeners: readonly ListenerReport[] }
  | { readonly type: 'done'; readonly seq: number }
  | { readonly type: 'error'; readonly seq: number; readonly message: string };

/** What a worker process is started with (in its environment, as JSON). */
export interface WorkerConfig {
  readonly options: Partial<EngineOptions>;
  readonly logLevel: string;
  readonly index: number;
  /** Whether listening sockets arrive on the descriptor channel (stdio slot 4). */
  readonly fdChannel: boolean;
}

export const WORKER_CONFIG_ENV = 'KPROXY_FORWARDER_WORKER';
