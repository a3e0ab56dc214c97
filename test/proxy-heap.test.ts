// The compaction after a large sync: old-generation pages kept by a few
// survivors go back to the system, and what survives is untouched.
import test from 'ava';
import v8 from 'node:v8';
import { compactHeap } from '../lib/heap.ts';
import { fragmentHeap } from './helpers/heap-burst.ts';

test('compactHeap gives back pages that a burst left mostly empty', (t) => {
  const kept = fragmentHeap();
  const r = compactHeap();
  t.log(`heap ${(r.heapBefore / 1e6).toFixed(1)} MB -> ${(r.heapAfter / 1e6).toFixed(1)} MB in ${r.pauseMs} ms`);
  t.true(r.heapAfter < r.heapBefore - 20e6, `heap only went from ${r.heapBefore} to ${r.heapAfter} bytes`);
  t.is(r.heapAfter, v8.getHeapStatistics().total_heap_size);
  t.is(kept.length, 8000);
  t.true(kept.every((o, k) => o.i === k * 50 && o.pad.length === 8 && o.pad[7] === o.i));
});
