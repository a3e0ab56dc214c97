// The line diff behind `kproxy diff`: a minimal edit script (checked against
// an LCS on random inputs) and unified hunks.
import test from 'ava';
import { diffLines, unifiedDiff } from '../proxy/commands/line-diff.ts';

function lcs(a: string[], b: string[]): number {
  const dp = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) dp[i][j] = a[i - 1] === b[j - 1] ? dp[i - 1][j - 1] + 1 : Math.max(dp[i - 1][j], dp[i][j - 1]);
  }
  return dp[a.length][b.length];
}

test('edit scripts rebuild both sides and keep a longest common subsequence', (t) => {
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  for (let i = 0; i < 2000; i++) {
    const a = Array.from({ length: rnd(14) }, () => 'abcd'[rnd(4)]);
    const b = Array.from({ length: rnd(14) }, () => 'abcd'[rnd(4)]);
    const ops = diffLines(a, b);
    const ctx = JSON.stringify({ a, b });
    t.deepEqual(ops.filter((o) => o.op !== '+').map((o) => o.line), a, ctx);
    t.deepEqual(ops.filter((o) => o.op !== '-').map((o) => o.line), b, ctx);
    t.is(ops.filter((o) => o.op === ' ').length, lcs(a, b), ctx);
  }
});

test('unified hunks with context; equal input gives nothing', (t) => {
  const a = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
  t.is(unifiedDiff(a, a, 'x', 'y'), '');
  t.is(unifiedDiff(a, ['a', 'b', 'X', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'], 'desired', 'kernel'), [
    '--- desired', '+++ kernel',
    '@@ -1,6 +1,6 @@', ' a', ' b', '-c', '+X', ' d', ' e', ' f',
    '@@ -8,3 +8,4 @@', ' h', ' i', ' j', '+k',
  ].join('\n') + '\n');
  t.is(unifiedDiff([], ['x'], 'a', 'b'), '--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n');
});
