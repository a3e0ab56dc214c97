// flatString keeps the text and gives a copy in one piece: the heap a
// concatenated string would hold shrinks.
import test from 'ava';
import v8 from 'node:v8';
import { compactHeap } from '../lib/heap.ts';
import { flatString } from '../lib/flat-string.ts';

function built(i: number, proto: string, port: number): string {
  const ip = `10.${(i >> 8) & 255}.${i & 255}.1`;
  return `${ip},${proto}:${port},${ip}`;
}

test('flatString keeps any text unchanged', (t) => {
  for (const s of ['', 'a', built(7, 'tcp', 8080), 'ns/svc:p\u00e9rt "quoted" \\ \n', '\ud800 lone surrogate', '\u{1f600}']) {
    t.is(flatString(s), s);
  }
});

test('flat copies of concatenated strings take less heap than the strings', (t) => {
  const measure = (flat: boolean): number => {
    compactHeap();
    const before = v8.getHeapStatistics().used_heap_size;
    const kept: string[] = [];
    for (let i = 0; i < 50_000; i++) {
      const s = built(i, i % 2 ? 'tcp' : 'udp', 8000 + (i % 1000));
      kept.push(flat ? flatString(s) : s);
    }
    compactHeap();
    const used = v8.getHeapStatistics().used_heap_size - before;
    t.is(kept.length, 50_000);
    t.is(kept[49_999], built(49_999, 'tcp', 8999));
    return used;
  };
  const tree = measure(false);
  const flat = measure(true);
  t.log(`50,000 strings: ${(tree / 1e6).toFixed(1)} MB concatenated, ${(flat / 1e6).toFixed(1)} MB flat`);
  t.true(flat < tree * 0.6, `flat ${flat} bytes vs concatenated ${tree} bytes`);
});
