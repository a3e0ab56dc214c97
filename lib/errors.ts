// One catalogue of kproxy's operator-facing errors. Codes are stable: logs,
// alerts and scripts may match on them; the wording may change. Every error
// kproxy raises on purpose is a KproxyError with a code from this list.

export const errorCatalogue = {
  KPROXY_BAD_CONFIG: { exitCode: 2, summary: 'invalid flags or configuration' },
  KPROXY_DNS_CONFIG_INVALID: { exitCode: 2, summary: 'invalid dns-cache configuration' },
  KPROXY_SOURCE_FAILED: { exitCode: 1, summary: 'could not read Services and EndpointSlices' },
  KPROXY_SYNC_FAILED: { exitCode: 1, summary: 'could not program the kernel' },
  KPROXY_BIND_FAILED: { exitCode: 1, summary: 'could not listen on an address' },
  KPROXY_CLEANUP_FAILED: { exitCode: 1, summary: 'could not remove every rule' },
  KPROXY_NOT_FOUND: { exitCode: 1, summary: 'no such Service or address' },
  KPROXY_KERNEL_READ_FAILED: { exitCode: 1, summary: 'could not read the rules the kernel holds' },
  KPROXY_TOOL_FAILED: { exitCode: 1, summary: 'a kernel tool failed' },
  KPROXY_IPTABLES_VARIANT: { exitCode: 2, summary: 'unknown iptables variant' },
  KPROXY_IPTABLES_SYNTAX: { exitCode: 1, summary: 'an iptables rule kproxy cannot read' },
  KPROXY_NFT_INVALID: { exitCode: 1, summary: 'an nft command kproxy refuses to send' },
  KPROXY_NFT_REJECTED: { exitCode: 1, summary: 'the (fake) kernel refused an nft batch' },
  KPROXY_IPVS_INVALID: { exitCode: 1, summary: 'an IPVS or ipset command kproxy refuses to send' },
  KPROXY_IPVS_REJECTED: { exitCode: 1, summary: 'the (fake) kernel refused an IPVS or ipset batch' },
  KPROXY_RENDER_REFUSED: { exitCode: 1, summary: 'a Service port whose rules could not be rendered safely' },
  KPROXY_KERNEL_MISSING: { exitCode: 1, summary: 'the kernel lacks what the chosen mode needs' },
  KPROXY_FORWARDER_TABLE_INVALID: { exitCode: 1, summary: 'a forwarder table kproxy refuses to load' },
  KPROXY_FORWARDER_FAILED: { exitCode: 1, summary: 'the userspace forwarder could not serve every listener' },
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
 * Every problem found while validating flags or a config file, listed in
 * one message so an operator fixes them all in one go.
 */
export class ConfigError extends KproxyError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[], opts: { code?: 'KPROXY_BAD_CONFIG' | 'KPROXY_DNS_CONFIG_INVALID'; source?: string } = {}) {
    const code = opts.code ?? 'KPROXY_BAD_CONFIG';
    const what = opts.source ? `${errorCatalogue[code].summary} (${opts.source})` : errorCatalogue[code].summary;
    super(code, `${what} (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** The one line an operator sees on stderr for a fatal error. */
export function formatError(err: unknown): string {
  if (err instanceof KproxyError) return `kproxy: ${err.code}: ${err.message}`;
  return `kproxy: ${err instanceof Error ? err.message : String(err)}`;
}

export function exitCodeOf(err: unknown): number {
  return err instanceof KproxyError ? err.exitCode : 1;
}
