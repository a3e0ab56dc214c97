// Memory for cached answers. Small Buffers normally come from Node's shared
// 8 KiB pool, where one long-lived answer keeps a whole pool (and the
// short-lived buffers carved around it) alive: 100,000 cached names would
// pin hundreds of MB. Cached answers get slabs of their own instead.
const SLAB_SIZE = 64 * 1024;
const LARGE = 4096;

let slab: Buffer = Buffer.allocUnsafeSlow(SLAB_SIZE);
let used = 0;

/** An uninitialised buffer of `n` bytes meant to live as long as a cache entry. */
export function allocLongLived(n: number): Buffer {
  if (n > LARGE) return Buffer.allocUnsafeSlow(n);
  if (used + n > SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    used = 0;
  }
  const b = slab.subarray(used, used + n);
  used += (n + 7) & ~7;
  return b;
}
