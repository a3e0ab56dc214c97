// Command-line syntax: kube-proxy's flag names, `--flag value` and
// `--flag=value`, plus the value syntaxes shared with the config file
// (Go durations, CIDRs, host:port). Parsing never throws: every problem is
// collected so the caller can report them all at once.
import { isIP } from 'node:net';
import { defaultMode, modes } from '../modes/registry.ts';

export type FlagKind = 'string' | 'bool' | 'int';

export interface FlagSpec {
  readonly name: string;
  readonly kind: FlagKind;
  readonly help: string;
}

const coreFlagSpecs: readonly FlagSpec[] = [
  { name: 'proxy-mode', kind: 'string', help: `the dataplane: ${modes.map((m) => m.name).join(', ')} (default ${defaultMode})` },
  { name: 'config', kind: 'string', help: 'KubeProxyConfiguration YAML file; flags override it' },
  { name: 'kubeconfig', kind: 'string', help: 'kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)' },
  { name: 'hostname-override', kind: 'string', help: 'this node\'s name (default: the host name)' },
  { name: 'cluster-cidr', kind: 'string', help: 'pod CIDRs, comma-separated, one per family' },
  { name: 'masquerade-all', kind: 'bool', help: 'SNAT all traffic sent to Services' },
  { name: 'iptables-masquerade-bit', kind: 'int', help: 'fwmark bit for masquerade, 0-31 (default 14)' },
  { name: 'external-ip-cidrs', kind: 'string', help: 'CIDRs Services\' externalIPs must lie in, comma-separated (default: any; others are refused and reported)' },
  { name: 'nodeport-addresses', kind: 'string', help: 'CIDRs NodePorts answer on, comma-separated, or "primary" (default: all local addresses)' },
  { name: 'iptables-sync-period', kind: 'string', help: 'drift check and retry period, Go duration (default 30s)' },
  { name: 'iptables-min-sync-period', kind: 'string', help: 'minimum time between syncs, Go duration (default 1s; 0s allowed)' },
  { name: 'metrics-bind-address', kind: 'string', help: 'host:port for /metrics (default 127.0.0.1:10249; empty or 0 disables)' },
  { name: 'healthz-bind-address', kind: 'string', help: 'host:port for /healthz and /livez (default 0.0.0.0:10256; empty or 0 disables)' },
  { name: 'cleanup', kind: 'bool', help: 'remove every rule any kproxy mode owns, then exit' },
  { name: 'v', kind: 'int', help: 'log verbosity as in kube-proxy (0-1 info, 2-4 debug, 5+ trace)' },
  { name: 'log-level', kind: 'string', help: 'pino log level: trace, debug, info, warn, error, fatal, silent' },
  { name: 'source-file', kind: 'string', help: 'read Services, EndpointSlices and Nodes from this YAML file instead of the API server' },
  { name: 'live', kind: 'bool', help: 'dump: print what the kernel holds instead of the desired rules' },
  { name: 'help', kind: 'bool', help: 'print this help' },
];

/** Flags of every mode's settings, for the flag parser and --help. */
function modeFlagSpecs(): FlagSpec[] {
  return modes.flatMap((m) => m.settings.filter((s) => s.flag).map((s): FlagSpec => ({
    name: s.flag!, kind: s.kind === 'bool' ? 'bool' : s.kind === 'int' ? 'int' : 'string', help: `${s.help} (${m.name} mode)`,
  })));
}

/** kproxy's flags: the core's, then each mode's own (modes/registry.ts). */
export const flagSpecs: readonly FlagSpec[] = [...coreFlagSpecs, ...modeFlagSpecs()];

const specByName = new Map(flagSpecs.map((s) => [s.name, s]));

export interface ParsedArgs {
  /** Flag values as given, keyed by flag name (bools as true/false, ints as numbers). */
  readonly values: ReadonlyMap<string, string | boolean | number>;
  readonly positional: readonly string[];
  readonly problems: readonly string[];
}

/** Splits argv (without node and script) into flags and positional arguments. */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const values = new Map<string, string | boolean | number>();
  const positional: string[] = [];
  const problems: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    // kube-proxy (pflag) accepts --flag; klog's -v is also commonly single-dash.
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf('=');
    let name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === 'h') name = 'help';
    const spec = specByName.get(name);
    if (!spec) {
      problems.push(`unknown flag ${arg.split('=')[0]}`);
      continue;
    }
    let raw: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (spec.kind === 'bool') {
      if (raw === undefined) {
        values.set(name, true);
      } else if (raw === 'true' || raw === 'false') {
        values.set(name, raw === 'true');
      } else {
        problems.push(`--${name}: "${raw}" is not true or false`);
      }
      continue;
    }
    if (raw === undefined) {
      if (i + 1 >= argv.length) {
        problems.push(`--${name} needs a value`);
        continue;
      }
      raw = argv[++i];
    }
    if (spec.kind === 'int') {
      if (!/^-?\d+$/.test(raw)) problems.push(`--${name}: "${raw}" is not an integer`);
      else values.set(name, Number(raw));
    } else {
      values.set(name, raw);
    }
  }
  return { values, positional, problems };
}

export function helpText(): string {
  const lines = [
    'Usage: kproxy [flags]                      run the proxy',
    '       kproxy --cleanup                    remove every rule kproxy owns (all modes)',
    '       kproxy dump [--live] [flags]        print the desired rules (or, with --live, the kernel\'s)',
    '       kproxy diff [flags]                 desired vs kernel rules; exit 1 when they differ',
    '       kproxy explain [flags] IP:PORT[/PROTO] | NAMESPACE/NAME',
    '       kproxy dns-cache [dns-cache flags]  run the node-local DNS cache',
    '',
    'Flags:',
  ];
  for (const s of flagSpecs) {
    const arg = s.kind === 'bool' ? '' : s.kind === 'int' ? ' N' : ' VALUE';
    lines.push(`  --${(s.name + arg).padEnd(32)} ${s.help}`);
  }
  return lines.join('\n') + '\n';
}

// ---- value syntaxes shared by flags and the config file ----

const durationUnits: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a Go duration ("30s", "1m30s", "500ms", "0") into milliseconds; undefined when invalid. */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let ms = 0;
  let pos = 0;
  if (s.length === 0) return undefined;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) return undefined;
    ms += Number(m[1]) * durationUnits[m[2]];
    pos = re.lastIndex;
  }
  return ms;
}

/** Splits a comma-separated list, dropping blanks. */
export function splitList(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

export interface BindAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses "IP:PORT", "[IPv6]:PORT" or a bare IP (gets `defaultPort`, as
 * kube-proxy does). Returns a string describing the problem when invalid.
 */
export function parseBindAddress(text: string, defaultPort: number): BindAddress | string {
  let host: string;
  let portText: string | undefined;
  if (isIP(text) !== 0) {
    host = text;
  } else if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return 'missing "]"';
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return 'expected ":PORT" after "]"';
    portText = rest === '' ? undefined : rest.slice(1);
    if (isIP(host) !== 6) return `"${host}" is not an IPv6 address`;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return 'expected IP:PORT';
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host === '') host = '0.0.0.0';
    if (isIP(host) !== 4) return `"${host}" is not an IP address`;
  }
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return `"${portText}" is not a port (0-65535)`;
    port = Number(portText);
  }
  return { host, port };
}
