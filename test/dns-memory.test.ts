// The heap compaction after a burst: pages left mostly empty by dead objects
// (with a live object on each) go back once the reducer runs.
import test from 'ava';
import v8 from 'node:v8';
import { startMemoryReducer } from '../dns-cache/memory.ts';
import { silentLogger } from '../lib/log.ts';
import { fragmentHeap } from './helpers/heap-burst.ts';

test('a burst leaves heap pages behind; the reducer gives them back', async (t) => {
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
