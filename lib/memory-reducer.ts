// Gives memory back after bursts. A burst (a large sync, a run of changes,
// a burst of DNS misses) leaves objects that outlived a young-generation
// collection, so they were moved to old-generation pages; once they die V8
// keeps those pages, and a pool of freed pages besides, so the process stays
// at the high-water mark of its heap: V8's own memory reducer does not
// reliably run when the process goes quiet. A compacting collection moves
// the survivors together and releases the rest, the pool included;
// malloc_trim does the same for the C heap. It pauses the process (tens of
// milliseconds for a small heap; at 10,000 Services about 0.3 s of CPU, and
// up to 2 s of wall time on a loaded machine), so it runs only when memory has grown
// well past its live size, not more often than a share of the time, and,
// where pauses matter more than memory (the DNS cache answering queries),
// only while the event loop is mostly idle.
import v8 from 'node:v8';
import { trimCHeap } from './c-heap.ts';
import { compactHeap } from './heap.ts';
import type { Logger } from './log.ts';

export interface ReducerOptions {
  /** How often the heap is looked at. */
  readonly intervalMs: number;
  /** Growth (of the heap over its live size, or of RSS) since the last compaction that is worth one. */
  readonly slackBytes: number;
  /** Least time between two compactions (bounds the pauses under steady load). */
  readonly minGapMs: number;
  /** Longest share of the time spent compacting: the gap is also at least the last compaction's CPU time / this. */
  readonly cpuShare?: number;
  /** Event-loop utilisation (0..1) above which the process counts as busy and is left alone (1: never). */
  readonly busyAbove: number;
}

export const DEFAULT_REDUCER: ReducerOptions = { intervalMs: 2000, slackBytes: 24 * 1024 * 1024, minGapMs: 10_000, busyAbove: 0.5 };

let requested = false;

/**
 * Asks for one compaction at the next quiet look, whatever the growth and
 * however recent the last one (after a large list, whose pages of JSON
 * leave the kept objects spread thin over the old generation).
 */
export function requestCompaction(): void {
  requested = true;
}

/** One compaction of the V8 heap and trim of the C heap. */
export function reduceMemory(): ReturnType<typeof compactHeap> & { trimmed: boolean } {
  const r = compactHeap();
  return { ...r, trimmed: trimCHeap() };
}

/** Compacts at once, then keeps watching the heap; returns a stop function. */
export function startMemoryReducer(log: Logger, opts: ReducerOptions = DEFAULT_REDUCER): () => void {
  const gapAfter = (r: { cpuMs: number }): number => Math.max(opts.minGapMs, opts.cpuShare ? r.cpuMs / opts.cpuShare : 0);
  const first = reduceMemory();
  log.debug(first, 'heap compacted');
  // V8's pool of freed pages is not part of its heap statistics: RSS shows
  // it. V8 unmaps freed pages on a helper thread, so RSS right after a
  // compaction can still hold them: the baseline is taken at the next look.
  let live = v8.getHeapStatistics().used_heap_size;
  let rss: number | undefined;
  let elu = performance.eventLoopUtilization();
  let last = performance.now();
  let gapMs = gapAfter(first);
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, elu).utilization > opts.busyAbove;
    elu = now;
    const rssNow = process.memoryUsage.rss();
    rss ??= rssNow;
    const grown = Math.max(v8.getHeapStatistics().total_heap_size - live, rssNow - rss);
    const started = performance.now();
    if (busy || (!requested && (grown < opts.slackBytes || started - last < gapMs))) return;
    requested = false;
    last = started;
    const r = reduceMemory();
    live = v8.getHeapStatistics().used_heap_size;
    rss = undefined;
    gapMs = gapAfter(r);
    log.debug(r, 'heap compacted');
  }, opts.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
