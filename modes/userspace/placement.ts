// Which forwarding processes open which listeners. Every process opens
// every listener when the open-file limit allows (so every core accepts
// for every Service, the kernel spreading connections through
// SO_REUSEPORT); when the listeners would not fit, each goes to fewer
// processes, chosen by a hash of its key so it stays put across tables.
import { readFileSync } from 'node:fs';
import { hashAddress } from './balancer.ts';
import { listenerKey, type ForwarderTable, type ListenerSpec } from './table.ts';

/** Share of a process's open-file limit given to listeners; the rest is for connections. */
export const LISTENER_SHARE = 0.6;

/** The soft open-file limit of this process (Linux /proc), or `fallback` when unknown. */
export function openFileLimit(fallback = 1024): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    // not Linux
  }
  return fallback;
}

/** How many processes open each listener, for `listeners` of them over `workers` processes. */
export function replicasFor(listeners: number, workers: number, budgetPerWorker: number): number {
  if (listeners <= budgetPerWorker) return workers;
  return Math.max(1, Math.min(workers, Math.floor((workers * budgetPerWorker) / listeners)));
}

const everyWorker = new Map<number, readonly number[]>();

/**
 * The processes that open `l`, of `workers`, when each listener goes to
 * `replicas` of them. Depends only on the listener (its key, or its Service
 * port's name under affinity), so it stays put as other listeners come and go.
 */
export function workersOf(l: ListenerSpec, workers: number, replicas: number): readonly number[] {
  if (l.affinitySeconds > 0) return [hashAddress(l.service) % workers];
  if (replicas >= workers) {
    let all = everyWorker.get(workers);
    if (all === undefined) everyWorker.set(workers, (all = Array.from({ length: workers }, (_, i) => i)));
    return all;
  }
  const first = hashAddress(listenerKey(l)) % workers;
  return Array.from({ length: replicas }, (_, j) => (first + j) % workers);
}

/**
 * The table each of `workers` processes serves. Listeners of a Service
 * port with ClientIP affinity all go to one process (chosen by the Service
 * port's name): the kernel spreads a client's connections over the
 * processes by source port, and affinity is remembered per process.
 */
export function placeListeners(table: ForwarderTable, workers: number, budgetPerWorker: number): ForwarderTable[] {
  const replicas = replicasFor(table.listeners.length, workers, budgetPerWorker);
  const sticky = table.listeners.some((l) => l.affinitySeconds > 0);
  if (replicas === workers && !sticky) return Array.from({ length: workers }, () => table);
  const parts = Array.from({ length: workers }, () => [] as ListenerSpec[]);
  for (const l of table.listeners) for (const w of workersOf(l, workers, replicas)) parts[w].push(l);
  return parts.map((listeners) => ({ clusterSources: table.clusterSources, listeners }));
}
