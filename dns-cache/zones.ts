// Suffix routing: the longest configured suffix of a query name picks the
// zone. Names are compared in lowercased wire form (the cache key's prefix),
// so routing needs no text decoding.

/** "Cluster.Local." / "cluster.local" / "." -> lowercased wire form as latin1. */
export function wireName(dotted: string): string {
  const name = dotted.toLowerCase().replace(/\.$/, '');
  if (name === '') return '\x00';
  // join makes one flat string (kept as a table key, a concatenation would hold its parts too).
  const parts: string[] = [];
  for (const label of name.split('.')) parts.push(String.fromCharCode(label.length), label);
  parts.push('\x00');
  return parts.join('');
}

/** Lowercased wire name (latin1 string) -> "a.b.c." for logs and errors. */
export function dottedName(wire: string): string {
  let out = '';
  let off = 0;
  while (off < wire.length) {
    const len = wire.charCodeAt(off);
    if (len === 0) break;
    out += wire.slice(off + 1, off + 1 + len) + '.';
    off += len + 1;
  }
  return out === '' ? '.' : out;
}

export class ZoneTable<Z> {
  private readonly bySuffix = new Map<string, Z>();

  constructor(zones: ReadonlyArray<{ readonly suffix: string; readonly zone: Z }>) {
    for (const { suffix, zone } of zones) this.bySuffix.set(wireName(suffix), zone);
  }

  /**
   * The zone for a key that starts with a lowercased wire name of
   * `nameLen` bytes; undefined when no suffix (not even ".") matches.
   */
  route(key: string, nameLen: number): Z | undefined {
    let off = 0;
    for (;;) {
      const z = this.bySuffix.get(key.slice(off, nameLen));
      if (z !== undefined) return z;
      const len = key.charCodeAt(off);
      if (len === 0) return undefined;
      off += len + 1;
    }
  }
}
