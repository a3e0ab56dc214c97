// Passing listening sockets from the forwarder's supervisor to its workers
// (native/fd-pass.c): one accept queue per TCP listener, shared by every
// worker, instead of one queue per worker.
import { loadAddon } from '../../lib/addon.ts';
import { forwarderAddon } from './addon-path.ts';

export interface FdModule {
  socketPair(): [number, number];
  sendFds(sock: number, fds: readonly number[]): void;
  recvFds(sock: number, count: number, timeoutMs: number): number[];
  closeFd(fd: number): void;
  openTcpListener(host: string, port: number, backlog: number, reusePort: boolean): number;
}

/** The descriptor-passing functions, or why they cannot be used (then every worker binds its own listeners). */
export function fdModule(): FdModule | Error {
  return loadAddon<FdModule>(forwarderAddon, 'forwarder', ['sendFds', 'openTcpListener']);
}

/** The descriptor a worker reads passed sockets from (its stdio slot 4). */
export const WORKER_FD_CHANNEL = 4;
