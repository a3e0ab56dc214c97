// When the DNS cache gives memory back (lib/memory-reducer.ts does it). Each
// cache miss leaves objects that outlive a young-generation collection
// (waiters, upstream state), promoted onto the same old-generation pages as
// the new cache entries; once they die the pages stay, each held by a live
// entry. Compacting after a burst frees about 80 MB of RSS at 100,000
// names, and malloc_trim about 15 MB more (socket and receive buffers of
// the misses). Only when the heap has grown 24 MB past its live size and
// queries leave the event loop mostly idle, at most once per 10 s.
import type { Logger } from '../lib/log.ts';
import { DEFAULT_REDUCER, startMemoryReducer } from '../lib/memory-reducer.ts';

/** A watched zone asks for one compaction after each complete (re)list. */
export { requestCompaction } from '../lib/memory-reducer.ts';

export function startDnsMemoryReducer(log: Logger): () => void {
  return startMemoryReducer(log, DEFAULT_REDUCER);
}
