// The heap compaction after a burst: pages left mostly empty by dead objects
// (with a live object on each) go back once the reducer runs, and no more
// often than its share of the time allows.
import test from 'ava';
import v8 from 'node:v8';
import { cHeapAddon } from '../lib/c-heap.ts';
import { startMemoryReducer } from '../lib/memory-reducer.ts';
import { silentLogger } from '../lib/log.ts';
import { fragmentHeap } from './helpers/heap-burst.ts';

// Both look at this process's heap: one at a time.
test.serial('a burst leaves heap pages behind; the reducer gives them back', async (t) => {
  const stop = startMemoryReducer(silentLogger(), { intervalMs: 50, slackBytes: 1024 * 1024, minGapMs: 0, busyAbove: 1 });
  const kept = fragmentHeap();
  const before = v8.getHeapStatistics().total_heap_size;
  await new Promise((r) => setTimeout(r, 300));
  stop();
  const after = v8.getHeapStatistics().total_heap_size;
  t.log(`heap ${(before / 1e6).toFixed(1)} MB -> ${(after / 1e6).toFixed(1)} MB, ${kept.length} objects kept`);
  t.true(after < before - 20e6, `heap only went from ${before} to ${after} bytes`);
  t.is(kept.length, 8000);
});

test.serial('a CPU share keeps the next compaction away for the last one\'s CPU time / share', async (t) => {
  // The compaction at start takes a millisecond of CPU or more: with a
  // share of one millionth the next one waits over 15 minutes.
  const stop = startMemoryReducer(silentLogger(), { intervalMs: 50, slackBytes: 1024 * 1024, minGapMs: 0, cpuShare: 1e-6, busyAbove: 1 });
  const kept = fragmentHeap();
  const before = v8.getHeapStatistics().total_heap_size;
  await new Promise((r) => setTimeout(r, 300));
  stop();
  const after = v8.getHeapStatistics().total_heap_size;
  t.true(after > before - 20e6, `the heap was compacted again (${before} -> ${after} bytes) though the CPU share forbids it`);
  t.is(kept.length, 8000);
});

test('the malloc_trim addon is built', (t) => {
  const addon = cHeapAddon();
  t.false(addon instanceof Error, addon instanceof Error ? `${addon.message}: install g++, make and python3, then npm ci` : '');
  if (!(addon instanceof Error)) t.is(typeof addon.trim(), 'boolean');
});
