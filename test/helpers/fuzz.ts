// The fuzz tests' random source: xorshift32 from a seed that is printed, so
// a failing run can be replayed with KPROXY_FUZZ_SEED.
import type { ExecutionContext } from 'ava';

function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 0x100000000;
  };
}

/** A seeded source (the seed logged on `t`): `int(n)` in [0, n). */
export function fuzzRandom(t: ExecutionContext): { int: (n: number) => number } {
  const seed = Number(process.env.KPROXY_FUZZ_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (KPROXY_FUZZ_SEED=${seed} replays it)`);
  const rnd = prng(seed);
  return { int: (n) => Math.floor(rnd() * n) };
}
