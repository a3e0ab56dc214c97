// Command-line flag lookup shared by the benchmarks.

/** The value after `flag` in `argv` (`--services 500` → '500'), or undefined when the flag is absent. */
export function flagValue(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}
