// Gives back the memory a large sync leaves behind. Listing the cluster and
// rendering the first full batch allocate far more than kproxy keeps (the
// list pages' JSON text, the batch text, intermediate arrays); the objects
// that stay are spread over old-generation pages that V8 keeps while any
// live object sits on them. A compacting collection moves the survivors
// together and returns the rest to the system. It pauses the process (tens
// of milliseconds at 10,000 Services), so it runs only after such a sync.
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

let gc: GcFunction | undefined;

/** V8's collector as a function; the flag only exposes it to contexts created after it is set. */
function collector(): GcFunction {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as GcFunction;
  }
  return gc;
}

/**
 * Runs a full compacting collection; returns the heap size before and after,
 * the pause, and the CPU time it took (all threads; unlike the pause, not
 * inflated when other work holds the cores).
 */
export function compactHeap(): { heapBefore: number; heapAfter: number; pauseMs: number; cpuMs: number } {
  const heapBefore = v8.getHeapStatistics().total_heap_size;
  const started = performance.now();
  const cpu = process.cpuUsage();
  collector()({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  const used = process.cpuUsage(cpu);
  return {
    heapBefore, heapAfter: v8.getHeapStatistics().total_heap_size,
    pauseMs: Math.round(performance.now() - started), cpuMs: Math.round((used.user + used.system) / 100) / 10,
  };
}
