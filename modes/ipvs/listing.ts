// readKernel() text in a canonical form for `kproxy diff`: ipset save lists
// a hash set's members in the kernel's hash order, so they are sorted within
// each set; everything else is in a stable order already.
export function normalizeListing(text: string): string {
  const lines = text.split('\n');
  const out: string[] = [];
  let run: string[] = [];
  const flush = (): void => {
    out.push(...run.sort());
    run = [];
  };
  for (const l of lines) {
    if (l.startsWith('add ')) {
      run.push(l);
      continue;
    }
    flush();
    out.push(l);
  }
  flush();
  return out.join('\n');
}
