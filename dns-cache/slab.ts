// Memory for cached answers. Small Buffers normally come from Node's shared
// 8 KiB pool, where one long-lived answer keeps a whole pool (and the
// short-lived buffers carved around it) alive: 100,000 cached names would
// pin hundreds of MB. Cached answers get slabs of their own instead.
const SLAB_SIZE = 256 * 1024;
const LARGE = 4096;

let slab: Buffer = Buffer.allocUnsafeSlow(SLAB_SIZE);
let used = 0;

export interface Span {
  readonly buf: Buffer;
  readonly base: number;
}

/**
 * `n` uninitialised bytes meant to live as long as a cache entry: a slab and
 * an offset into it (no Buffer object per entry).
 */
export function allocLongLived(n: number): Span {
  if (n > LARGE) return { buf: Buffer.allocUnsafeSlow(n), base: 0 };
  if (used + n > SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    used = 0;
  }
  const base = used;
  used += (n + 7) & ~7;
  return { buf: slab, base };
}
