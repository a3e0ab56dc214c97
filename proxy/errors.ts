// One catalogue of kproxy's operator-facing errors. Codes are stable: logs,
// alerts and scripts may match on them; the wording may change.

export const errorCatalogue = {
  KPROXY_BAD_CONFIG: { exitCode: 2, summary: 'invalid flags or configuration' },
  KPROXY_SOURCE_FAILED: { exitCode: 1, summary: 'could not read Services and EndpointSlices' },
  KPROXY_SYNC_FAILED: { exitCode: 1, summary: 'could not program the kernel' },
  KPROXY_BIND_FAILED: { exitCode: 1, summary: 'could not listen on an address' },
  KPROXY_CLEANUP_FAILED: { exitCode: 1, summary: 'could not remove every rule' },
  KPROXY_NOT_FOUND: { exitCode: 1, summary: 'no such Service or address' },
  KPROXY_KERNEL_READ_FAILED: { exitCode: 1, summary: 'could not read the rules the kernel holds' },
} as const;

export type ErrorCode = keyof typeof errorCatalogue;

export class KproxyError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KproxyError';
    this.code = code;
    this.exitCode = errorCatalogue[code].exitCode;
  }
}

/**
 * Every problem found while validating flags and the config file, listed
 * in one message so an operator fixes them all in one go.
 */
export class ConfigError extends KproxyError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('KPROXY_BAD_CONFIG', `${errorCatalogue.KPROXY_BAD_CONFIG.summary} (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** The one line an operator sees on stderr for a fatal error. */
export function formatError(err: unknown): string {
  if (err instanceof KproxyError) return `kproxy: ${err.code}: ${err.message}`;
  const code = err instanceof Error ? (err as Error & { code?: unknown }).code : undefined;
  if (err instanceof Error && typeof code === 'string') return `kproxy: ${code}: ${err.message}`;
  return `kproxy: ${err instanceof Error ? err.message : String(err)}`;
}

export function exitCodeOf(err: unknown): number {
  return err instanceof KproxyError ? err.exitCode : 1;
}
