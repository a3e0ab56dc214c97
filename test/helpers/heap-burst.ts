// A heap left fragmented: about 40 MB of objects allocated, one in 50 kept,
// so every old-generation page still holds a live object. Returns the kept ones.
export function fragmentHeap(): { i: number; pad: number[] }[] {
  const kept: { i: number; pad: number[] }[] = [];
  const burst: object[] = [];
  for (let i = 0; i < 400_000; i++) {
    const o = { i, pad: new Array(8).fill(i) };
    burst.push(o);
    if (i % 50 === 0) kept.push(o);
  }
  return kept;
}
