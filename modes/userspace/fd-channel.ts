// Passing listening sockets from the forwarder's supervisor to its workers
// (native/fd-pass.c): one accept queue per TCP listener, shared by every
// worker, instead of one queue per worker.
import { createRequire } from 'node:module';

export interface FdModule {
  socketPair(): [number, number];
  sendFds(sock: number, fds: readonly number[]): void;
  recvFds(sock: number, count: number, timeoutMs: number): number[];
  closeFd(fd: number): void;
  openTcpListener(host: string, port: number, backlog: number, reusePort: boolean): number;
}

const ADDON = '../../build/Release/kproxy_forwarder.node';
let loaded: FdModule | Error | undefined;

/** The descriptor-passing functions, or why they cannot be used (then every worker binds its own listeners). */
export function fdModule(): FdModule | Error {
  if (loaded === undefined) {
    try {
      const m = createRequire(import.meta.url)(ADDON) as Partial<FdModule>;
      loaded = typeof m.sendFds === 'function' && typeof m.openTcpListener === 'function' ? m as FdModule : new Error('the native addon cannot pass descriptors; rebuild it (npm rebuild)');
    } catch (e) {
      loaded = new Error(`the native addon is not built (${(e as Error).message.split('\n')[0]})`);
    }
  }
  return loaded;
}

/** The descriptor a worker reads passed sockets from (its stdio slot 4). */
export const WORKER_FD_CHANNEL = 4;
