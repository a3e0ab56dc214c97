// Gives memory back after a burst of cache misses. Each miss leaves objects
// that outlive a young-generation collection (waiters, upstream state), so
// they are promoted onto the same old-generation pages as the new cache
// entries; once they die V8 keeps those pages, now mostly empty, because a
// live entry sits on each. A compacting collection moves the entries
// together and frees the rest (100,000 names: about 80 MB of RSS). It
// pauses the process for tens of milliseconds, so it runs only when the
// heap has grown well past its live size and the event loop is mostly idle.
// The C heap has the same holes (socket and receive buffers of the misses):
// malloc_trim hands those pages back too (about 15 MB with 100,000 names).
import v8 from 'node:v8';
import { compactHeap } from '../lib/heap.ts';
import type { Logger } from '../lib/log.ts';
import { nativeModule } from './native.ts';

export interface ReducerOptions {
  /** How often the heap is looked at. */
  readonly intervalMs: number;
  /** Heap growth over the live size after the last compaction that is worth one. */
  readonly slackBytes: number;
  /** Least time between two compactions (bounds the pauses under steady misses). */
  readonly minGapMs: number;
  /** Event-loop utilisation (0..1) above which the process counts as busy. */
  readonly busyAbove: number;
}

export const DEFAULT_REDUCER: ReducerOptions = { intervalMs: 2000, slackBytes: 24 * 1024 * 1024, minGapMs: 10_000, busyAbove: 0.5 };

let requested = false;

/**
 * Asks for one compaction at the next quiet moment, whatever the heap's
 * growth and however recent the last one: after a watched zone's complete
 * (re)list, whose pages of JSON leave the kept objects spread thin over the
 * old generation.
 */
export function requestCompaction(): void {
  requested = true;
}

/** Starts watching the heap; returns a stop function. */
export function startMemoryReducer(log: Logger, opts: ReducerOptions = DEFAULT_REDUCER): () => void {
  const native = nativeModule();
  const compact = (): ReturnType<typeof compactHeap> & { trimmed: boolean } => {
    const r = compactHeap();
    return { ...r, trimmed: native instanceof Error ? false : native.trim() };
  };
  // Once at start too: loading and compiling the modules leaves about 5 MB behind.
  compact();
  let live = v8.getHeapStatistics().used_heap_size;
  let elu = performance.eventLoopUtilization();
  let last = -Infinity;
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, elu).utilization > opts.busyAbove;
    elu = now;
    const total = v8.getHeapStatistics().total_heap_size;
    const started = performance.now();
    // A requested compaction (after a complete list: rare) does not wait for the gap.
    if (busy || !requested && (total < live + opts.slackBytes || started - last < opts.minGapMs)) return;
    last = started;
    requested = false;
    const r = compact();
    live = v8.getHeapStatistics().used_heap_size;
    log.debug(r, 'heap compacted');
  }, opts.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
