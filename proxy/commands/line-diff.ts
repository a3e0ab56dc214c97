// A unified-style line diff (Myers' O(ND) algorithm): fast when the two
// sides mostly agree, which is the normal case for desired vs kernel rules.

export type DiffOp = { readonly op: ' ' | '-' | '+'; readonly line: string };

export function diffLines(a: readonly string[], b: readonly string[]): DiffOp[] {
  const n = a.length;
  const m = b.length;
  const max = n + m;
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace: Int32Array[] = [];
  let found = false;
  for (let d = 0; d <= max && !found; d++) {
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1]) ? v[offset + k + 1] : v[offset + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) { x++; y++; }
      v[offset + k] = x;
      if (x >= n && y >= m) { found = true; break; }
    }
  }
  // Walk the trace back from (n, m) to build the edit script.
  const ops: DiffOp[] = [];
  let x = n;
  let y = m;
  for (let d = trace.length - 1; d >= 0 && (x > 0 || y > 0); d--) {
    const vd = trace[d];
    const k = x - y;
    const down = k === -d || (k !== d && vd[offset + k - 1] < vd[offset + k + 1]);
    const pk = down ? k + 1 : k - 1;
    const px = d === 0 ? 0 : vd[offset + pk];
    const py = px - pk;
    while (x > px && y > py && x > 0 && y > 0 && a[x - 1] === b[y - 1]) ops.push({ op: ' ', line: a[--x] }), y--;
    if (d === 0) break;
    if (down) ops.push({ op: '+', line: b[--y] });
    else ops.push({ op: '-', line: a[--x] });
  }
  while (x > 0 && y > 0) ops.push({ op: ' ', line: a[--x] }), y--;
  return ops.reverse();
}

/** Hunks with `context` lines around each change, under ---/+++ headers; '' when equal. */
export function unifiedDiff(a: readonly string[], b: readonly string[], nameA: string, nameB: string, context = 3): string {
  const ops = diffLines(a, b);
  if (ops.every((o) => o.op === ' ')) return '';
  const out = [`--- ${nameA}`, `+++ ${nameB}`];
  const changed = ops.map((o) => o.op !== ' ');
  let i = 0;
  // Line numbers at `pos`, carried from hunk to hunk (hunks only move forward).
  let pos = 0, la = 1, lb = 1;
  while (i < ops.length) {
    if (!changed[i]) { i++; continue; }
    const start = Math.max(0, i - context);
    let end = i;
    // Extend the hunk while the next change is within 2×context lines.
    for (;;) {
      while (end < ops.length && changed[end]) end++;
      let next = end;
      while (next < ops.length && !changed[next]) next++;
      if (next < ops.length && next - end <= 2 * context) { end = next; continue; }
      break;
    }
    const stop = Math.min(ops.length, end + context);
    for (; pos < start; pos++) { if (ops[pos].op !== '+') la++; if (ops[pos].op !== '-') lb++; }
    const slice = ops.slice(start, stop);
    const ca = slice.filter((o) => o.op !== '+').length;
    const cb = slice.filter((o) => o.op !== '-').length;
    // As GNU diff: an empty side is numbered from the line before it.
    out.push(`@@ -${ca === 0 ? la - 1 : la},${ca} +${cb === 0 ? lb - 1 : lb},${cb} @@`);
    for (const o of slice) out.push(`${o.op}${o.line}`);
    i = stop;
  }
  return out.join('\n') + '\n';
}
