// Command-line flags of `kproxy dns-cache`. Flags override the YAML file's
// top-level settings; `--zone` flags, when given, replace the file's zones.
import { configFromObject, dnsConfigError, loadConfigFile, type DnsCacheConfig } from './config.ts';

export const USAGE = `usage: kproxy dns-cache [flags]
  --config FILE              YAML configuration (re-read on change and on SIGHUP)
  --listen IP:PORT           address to serve on, UDP and TCP (repeatable; default 169.254.20.10:53)
  --zone SUFFIX=UP[,UP...]   forward SUFFIX to upstreams (IP, IP:PORT or a resolv.conf path);
                             repeatable, longest suffix wins, "." for everything else.
                             k8s:KUBECONFIG or k8s:in-cluster among them: answer SUFFIX (and the
                             PTRs of its addresses) from that API server, the others as fallback
  --kubernetes-ttl SECONDS   TTL of answers from an API server (default 5)
  --kubernetes-stale-after-ms MS  forward a k8s zone again after its API server has been
                             unreachable this long (default 60000)
  --kubernetes-pods insecure|disabled  answer <a-b-c-d>.<ns>.pod.<zone> (default insecure)
  --health-addr IP:PORT      serve /health here (default 127.0.0.1:8080; "" disables)
  --metrics-addr IP:PORT     serve /metrics here (default 127.0.0.1:9253; "" disables)
  --setup-interface=false    do not put the listen addresses on a dummy interface (default: on it,
                             or on lo if the kernel has no dummy driver; loopback addresses never)
  --setup-iptables=false     do not add raw-table NOTRACK and filter ACCEPT rules for them (default: add)
  --interface-name NAME      dummy interface name (default nodelocaldns)
  --skip-teardown            leave the interface and rules in place on exit
  --udp-sockets N            SO_REUSEPORT UDP sockets per listen address (default 1)
  --udp-io batched|dgram     UDP through batched system calls (default) or Node's dgram
  --tcp-idle-timeout-ms MS   close a TCP connection idle this long (default 10000)
  --tcp-message-timeout-ms MS  a TCP message must be whole this long after its first byte (default 3000)
  --tcp-max-connections N    TCP connections at once, all listen addresses (default 1000; the
                             connection idle the longest is closed to make room)
  --tcp-max-connections-per-client N  TCP connections one client address may hold (default 100)
  --log-level LEVEL          pino level (default info)`;

export interface DnsCacheArgs {
  readonly configPath: string | undefined;
  readonly logLevel: string | undefined;
  /** Settings from flags, in the YAML file's shape. */
  readonly overrides: Record<string, unknown>;
}

/** Parses argv (after "dns-cache"); throws ConfigError listing every bad flag. */
export function parseArgs(argv: readonly string[]): DnsCacheArgs {
  const problems: string[] = [];
  const overrides: Record<string, unknown> = {};
  const listen: string[] = [];
  const zones: Array<{ suffix: string; upstreams: string[] }> = [];
  const tcp: Record<string, unknown> = {};
  const kube: Record<string, unknown> = {};
  let configPath: string | undefined;
  let logLevel: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value: string | undefined;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const need = (): string => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) {
        problems.push(`${flag} needs a value`);
        return '';
      }
      return argv[++i];
    };
    switch (flag) {
      case '--config': configPath = need(); break;
      case '--listen': listen.push(need()); break;
      case '--zone': {
        const v = need();
        const at = v.indexOf('=');
        if (at <= 0 || at === v.length - 1) problems.push(`--zone "${v}": want SUFFIX=UPSTREAM[,UPSTREAM...]`);
        else zones.push({ suffix: v.slice(0, at), upstreams: v.slice(at + 1).split(',') });
        break;
      }
      case '--health-addr': overrides.health = need(); break;
      case '--metrics-addr': overrides.metrics = need(); break;
      case '--interface-name': overrides.interface_name = need(); break;
      case '--udp-sockets': {
        const v = need();
        overrides.udp_sockets = /^\d+$/.test(v) ? Number(v) : v;
        break;
      }
      case '--udp-io': overrides.udp_io = need(); break;
      case '--kubernetes-ttl': kube.ttl = intValue(need()); break;
      case '--kubernetes-stale-after-ms': kube.stale_after_ms = intValue(need()); break;
      case '--kubernetes-pods': kube.pods = need(); break;
      case '--tcp-idle-timeout-ms': tcp.idle_timeout_ms = intValue(need()); break;
      case '--tcp-message-timeout-ms': tcp.message_timeout_ms = intValue(need()); break;
      case '--tcp-max-connections': tcp.max_connections = intValue(need()); break;
      case '--tcp-max-connections-per-client': tcp.max_connections_per_client = intValue(need()); break;
      case '--log-level': logLevel = need(); break;
      case '--setup-interface': overrides.setup_interface = boolValue(value, flag, problems); break;
      case '--setup-iptables': overrides.setup_iptables = boolValue(value, flag, problems); break;
      case '--skip-teardown': overrides.skip_teardown = boolValue(value, flag, problems); break;
      default: problems.push(`unknown flag ${argv[i]}`);
    }
  }
  if (listen.length) overrides.listen = listen;
  if (zones.length) overrides.zones = zones;
  if (Object.keys(tcp).length) overrides.tcp = tcp;
  if (Object.keys(kube).length) overrides.defaults = { kubernetes: kube };
  if (problems.length) throw dnsConfigError('flags', problems);
  return { configPath, logLevel, overrides };
}

/** A number when it looks like one; otherwise the text, for validation to report. */
function intValue(v: string): number | string {
  return /^\d+$/.test(v) ? Number(v) : v;
}

function boolValue(v: string | undefined, flag: string, problems: string[]): boolean {
  if (v === undefined || v === 'true') return true;
  if (v === 'false') return false;
  problems.push(`${flag}=${v}: want true or false`);
  return false;
}

/** Reads the file (if any), applies the flags, validates. Throws ConfigError. */
export function resolveConfig(args: DnsCacheArgs): DnsCacheConfig {
  const doc = args.configPath ? loadConfigFile(args.configPath) : {};
  let merged = doc && typeof doc === 'object' ? { ...(doc as object), ...args.overrides } : doc;
  // The tcp and kubernetes flags override single keys of the file's
  // mappings, not the whole of them.
  const file = (doc ?? {}) as { tcp?: unknown; defaults?: { kubernetes?: unknown } };
  const isMap = (v: unknown): v is object => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (args.overrides.tcp && isMap(file.tcp)) {
    merged = { ...(merged as object), tcp: { ...file.tcp, ...(args.overrides.tcp as object) } };
  }
  const flagsKube = (args.overrides.defaults as { kubernetes?: object } | undefined)?.kubernetes;
  if (flagsKube && isMap(file.defaults)) {
    const fileKube = isMap(file.defaults.kubernetes) ? file.defaults.kubernetes : {};
    merged = { ...(merged as object), defaults: { ...file.defaults, kubernetes: { ...fileKube, ...flagsKube } } };
  }
  return configFromObject(merged, args.configPath ?? 'flags');
}
