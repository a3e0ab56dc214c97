// dns-cache configuration: the YAML file's shape, its defaults (those of
// NodeLocal DNSCache where it has one), and validation that lists every
// problem at once. A config that fails validation is never applied.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { parse as parseYaml } from 'yaml';
import type { Policy } from './forward.ts';
import { DEFAULT_TCP_LIMITS, type TcpLimitSettings } from './tcp-limits.ts';
import type { UpstreamAddress } from './upstream.ts';
import { wireName } from './zones.ts';
import { ConfigError } from '../lib/errors.ts';

export { ConfigError };

/** Every problem of one dns-cache configuration source (a file, the flags), in one error. */
export function dnsConfigError(source: string, problems: readonly string[]): ConfigError {
  return new ConfigError(problems, { code: 'KPROXY_DNS_CONFIG_INVALID', source });
}

export interface CacheSettings {
  /** Entries this zone may hold. */
  readonly capacity: number;
  readonly successTtl: number;
  readonly denialTtl: number;
  readonly minTtl: number;
  readonly prefetchAmount: number;
  readonly prefetchPercentage: number;
  /** Seconds past expiry an answer may be served while upstreams fail (0: never). */
  readonly serveStale: number;
  /** TTL given to a stale answer. */
  readonly staleTtl: number;
}

/** A zone answered from a Kubernetes API server (an upstream "k8s:KUBECONFIG" or "k8s:in-cluster"). */
export interface KubeSettings {
  /** Path of the kubeconfig; undefined: the in-cluster service account. */
  readonly kubeconfig: string | undefined;
  /** TTL of every answer made from the API server (CoreDNS's default: 5 s). */
  readonly ttl: number;
  /** How long the API server may be unreachable before the zone forwards again. */
  readonly staleAfterMs: number;
  /** Answer <dashed-address>.<namespace>.pod.<zone> (CoreDNS "pods insecure", the specification's pod records). */
  readonly pods: boolean;
}

/** "k8s:in-cluster" or "k8s:PATH", as written among the upstreams. */
export function kubeSourceLabel(s: KubeSettings): string {
  return s.kubeconfig === undefined ? 'k8s:in-cluster' : `k8s:${s.kubeconfig}`;
}

export interface ZoneSettings {
  readonly suffix: string;
  /** DNS upstreams (with a Kubernetes source: the fallback while it does not answer). */
  readonly upstreams: readonly UpstreamAddress[];
  /** Set when the zone is answered from a Kubernetes API server. */
  readonly kubernetes?: KubeSettings;
  readonly forceTcp: boolean;
  readonly policy: Policy;
  readonly maxFails: number;
  readonly healthCheckMs: number;
  readonly timeoutMs: number;
  readonly cache: CacheSettings;
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface DnsCacheConfig {
  readonly listen: readonly ListenAddress[];
  /** Serves /health; empty to disable. */
  readonly healthAddr: string;
  /** Serves /metrics; may equal healthAddr (one server); empty to disable. */
  readonly metricsAddr: string;
  readonly setupInterface: boolean;
  readonly setupIptables: boolean;
  readonly interfaceName: string;
  readonly skipTeardown: boolean;
  /** UDP sockets per listen address (SO_REUSEPORT). */
  readonly udpSockets: number;
  /** How UDP is read and written: batched system calls, or Node's dgram. */
  readonly udpIo: UdpIo;
  /** Limits on TCP clients (applied to open connections on reload too). */
  readonly tcp: TcpLimitSettings;
  readonly zones: readonly ZoneSettings[];
}

export type UdpIo = 'batched' | 'dgram';
const UDP_IO: readonly UdpIo[] = ['batched', 'dgram'];

export const DEFAULT_LISTEN = '169.254.20.10:53';

export const DEFAULT_CACHE: CacheSettings = {
  capacity: 9984, successTtl: 30, denialTtl: 5, minTtl: 0,
  prefetchAmount: 2, prefetchPercentage: 10, serveStale: 3600, staleTtl: 10,
};

const ZONE_DEFAULTS = {
  forceTcp: false, policy: 'sequential' as Policy, maxFails: 2, healthCheckMs: 500, timeoutMs: 2000,
};

/** "IP:PORT", "[IPv6]:PORT", or a bare IP with `defaultPort`. */
export function parseHostPort(s: string, defaultPort: number | undefined): { host: string; port: number } | string {
  let host = s;
  let port: number | undefined = defaultPort;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracket) {
    host = bracket[1];
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else if (net.isIPv4(s.split(':')[0]) && s.includes(':')) {
    const i = s.lastIndexOf(':');
    host = s.slice(0, i);
    port = /^\d+$/.test(s.slice(i + 1)) ? Number(s.slice(i + 1)) : NaN;
  }
  if (!net.isIP(host)) return `"${s}" is not an IP address or IP:PORT`;
  if (port === undefined) return `"${s}" needs a port (IP:PORT)`;
  if (!Number.isInteger(port) || port < 0 || port > 65535) return `"${s}" has a bad port`;
  return { host, port };
}

/** Nameservers of a resolv.conf-style file, port 53. */
export function readResolvConf(path: string): UpstreamAddress[] {
  const out: UpstreamAddress[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && net.isIP(m[1].replace(/%.*$/, ''))) out.push({ host: m[1].replace(/%.*$/, ''), port: 53 });
  }
  return out;
}

type Obj = Record<string, unknown>;

class Checker {
  readonly problems: string[] = [];
  add(path: string, msg: string): void {
    this.problems.push(`${path}: ${msg}`);
  }
  keys(o: Obj, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(o)) if (!allowed.includes(k)) this.add(path === '' ? k : `${path}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`);
  }
  int(o: Obj, key: string, path: string, dflt: number, min: number, max: number): number {
    const v = o[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.add(`${path}${key}`, `want an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
      return dflt;
    }
    return v;
  }
  bool(o: Obj, key: string, path: string, dflt: boolean): boolean {
    const v = o[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') {
      this.add(`${path}${key}`, `want true or false, got ${JSON.stringify(v)}`);
      return dflt;
    }
    return v;
  }
  str(o: Obj, key: string, path: string, dflt: string): string {
    const v = o[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'string') {
      this.add(`${path}${key}`, `want a string, got ${JSON.stringify(v)}`);
      return dflt;
    }
    return v;
  }
  obj(v: unknown, path: string): Obj | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) {
      this.add(path, `want a mapping, got ${JSON.stringify(v)}`);
      return undefined;
    }
    return v as Obj;
  }
}

export const DEFAULT_KUBERNETES = { ttl: 5, staleAfterMs: 60_000, pods: true };
const KUBERNETES_KEYS = ['ttl', 'stale_after_ms', 'pods'] as const;
const CACHE_KEYS = ['capacity', 'success_ttl', 'denial_ttl', 'min_ttl', 'prefetch', 'prefetch_percentage', 'serve_stale', 'stale_ttl'] as const;
const ZONE_KEYS = ['suffix', 'upstreams', 'transport', 'policy', 'max_fails', 'health_check_ms', 'timeout_ms', 'cache', 'kubernetes'] as const;
const TCP_KEYS = ['idle_timeout_ms', 'message_timeout_ms', 'max_connections', 'max_connections_per_client'] as const;
const TOP_KEYS = ['listen', 'health', 'metrics', 'setup_interface', 'setup_iptables', 'interface_name', 'skip_teardown', 'udp_sockets', 'udp_io', 'tcp', 'defaults', 'zones'] as const;
const DAY = 86400;

function cacheSettings(c: Checker, raw: Obj | undefined, path: string, base: CacheSettings): CacheSettings {
  if (!raw) return base;
  c.keys(raw, path, CACHE_KEYS);
  const p = path + '.';
  return {
    capacity: c.int(raw, 'capacity', p, base.capacity, 0, 10_000_000),
    successTtl: c.int(raw, 'success_ttl', p, base.successTtl, 0, 7 * DAY),
    denialTtl: c.int(raw, 'denial_ttl', p, base.denialTtl, 0, 7 * DAY),
    minTtl: c.int(raw, 'min_ttl', p, base.minTtl, 0, DAY),
    prefetchAmount: c.int(raw, 'prefetch', p, base.prefetchAmount, 0, 1_000_000),
    prefetchPercentage: c.int(raw, 'prefetch_percentage', p, base.prefetchPercentage, 1, 100),
    serveStale: c.int(raw, 'serve_stale', p, base.serveStale, 0, 7 * DAY),
    staleTtl: c.int(raw, 'stale_ttl', p, base.staleTtl, 0, DAY),
  };
}

function tcpLimits(c: Checker, raw: Obj | undefined): TcpLimitSettings {
  const d = DEFAULT_TCP_LIMITS;
  if (!raw) return d;
  c.keys(raw, 'tcp', TCP_KEYS);
  return {
    idleTimeoutMs: c.int(raw, 'idle_timeout_ms', 'tcp.', d.idleTimeoutMs, 100, 3_600_000),
    messageTimeoutMs: c.int(raw, 'message_timeout_ms', 'tcp.', d.messageTimeoutMs, 50, 600_000),
    maxConnections: c.int(raw, 'max_connections', 'tcp.', d.maxConnections, 1, 1_000_000),
    maxPerClient: c.int(raw, 'max_connections_per_client', 'tcp.', d.maxPerClient, 1, 1_000_000),
  };
}

interface KubeBase { ttl: number; staleAfterMs: number; pods: boolean }

function kubeBase(c: Checker, raw: Obj | undefined, path: string, base: KubeBase): KubeBase {
  if (!raw) return base;
  c.keys(raw, path, KUBERNETES_KEYS);
  const p = path + '.';
  const pods = c.str(raw, 'pods', p, base.pods ? 'insecure' : 'disabled');
  if (pods !== 'insecure' && pods !== 'disabled') c.add(`${p}pods`, `want insecure or disabled, got "${pods}"`);
  return {
    ttl: c.int(raw, 'ttl', p, base.ttl, 0, 3600),
    staleAfterMs: c.int(raw, 'stale_after_ms', p, base.staleAfterMs, 0, 7 * DAY * 1000),
    pods: pods !== 'disabled',
  };
}

interface ZoneBase {
  forceTcp: boolean; policy: Policy; maxFails: number; healthCheckMs: number; timeoutMs: number; cache: CacheSettings; kubernetes: KubeBase;
}

function zoneBase(c: Checker, raw: Obj, path: string, base: ZoneBase): ZoneBase {
  const p = path === '' ? '' : path + '.';
  const transport = c.str(raw, 'transport', p, base.forceTcp ? 'force_tcp' : 'prefer_udp');
  if (transport !== 'force_tcp' && transport !== 'prefer_udp') c.add(`${p}transport`, `want force_tcp or prefer_udp, got "${transport}"`);
  const policy = c.str(raw, 'policy', p, base.policy);
  if (!['sequential', 'round_robin', 'random'].includes(policy)) c.add(`${p}policy`, `want sequential, round_robin or random, got "${policy}"`);
  return {
    forceTcp: transport === 'force_tcp',
    policy: policy as Policy,
    maxFails: c.int(raw, 'max_fails', p, base.maxFails, 0, 1000),
    healthCheckMs: c.int(raw, 'health_check_ms', p, base.healthCheckMs, 0, 3_600_000),
    timeoutMs: c.int(raw, 'timeout_ms', p, base.timeoutMs, 10, 60_000),
    cache: cacheSettings(c, c.obj(raw.cache, `${p}cache`), `${p}cache`, base.cache),
    kubernetes: kubeBase(c, c.obj(raw.kubernetes, `${p}kubernetes`), `${p}kubernetes`, base.kubernetes),
  };
}

/** The Kubernetes source among a zone's upstreams ("k8s:KUBECONFIG" or "k8s:in-cluster"), and the rest. */
function splitKubeSource(c: Checker, list: unknown, path: string): { kube: { kubeconfig: string | undefined } | undefined; rest: unknown } {
  if (!Array.isArray(list)) return { kube: undefined, rest: list };
  let kube: { kubeconfig: string | undefined } | undefined;
  const rest: unknown[] = [];
  list.forEach((u, i) => {
    if (typeof u !== 'string' || !u.startsWith('k8s:')) {
      rest.push(u);
      return;
    }
    const what = u.slice(4);
    if (kube !== undefined) c.add(`${path}[${i}]`, 'a zone has at most one Kubernetes source');
    else if (what === '') c.add(`${path}[${i}]`, 'want k8s:KUBECONFIG (a kubeconfig path) or k8s:in-cluster');
    else kube = { kubeconfig: what === 'in-cluster' ? undefined : what };
  });
  return { kube, rest };
}

/** Upstream list entries: IP, IP:PORT, [IPv6]:PORT, or a resolv.conf path. */
export function parseUpstreams(c: Checker | undefined, list: unknown, path: string): UpstreamAddress[] {
  const problems = c ?? new Checker();
  const out: UpstreamAddress[] = [];
  if (!Array.isArray(list) || list.length === 0) {
    problems.add(path, 'want a non-empty list of IP, IP:PORT or a resolv.conf path');
    return out;
  }
  list.forEach((u, i) => {
    if (typeof u !== 'string') return problems.add(`${path}[${i}]`, `want a string, got ${JSON.stringify(u)}`);
    if (u.startsWith('/')) {
      try {
        const found = readResolvConf(u);
        if (found.length === 0) problems.add(`${path}[${i}]`, `${u} lists no nameserver`);
        out.push(...found);
      } catch (e) {
        problems.add(`${path}[${i}]`, `cannot read ${u}: ${(e as Error).message}`);
      }
      return;
    }
    const hp = parseHostPort(u, 53);
    if (typeof hp === 'string') problems.add(`${path}[${i}]`, hp);
    else out.push(hp);
  });
  return out;
}

/** Validates a parsed YAML document; throws ConfigError listing every problem. */
export function configFromObject(doc: unknown, source: string): DnsCacheConfig {
  const c = new Checker();
  const top = c.obj(doc, '(top level)') ?? {};
  c.keys(top, '', TOP_KEYS);
  const listenRaw = top.listen ?? [DEFAULT_LISTEN];
  const listen: ListenAddress[] = [];
  if (!Array.isArray(listenRaw) || listenRaw.length === 0) c.add('listen', 'want a non-empty list of IP:PORT');
  else {
    listenRaw.forEach((l, i) => {
      const hp = typeof l === 'string' ? parseHostPort(l, 53) : `want a string, got ${JSON.stringify(l)}`;
      if (typeof hp === 'string') c.add(`listen[${i}]`, hp);
      else if (hp.host === '0.0.0.0' || hp.host === '::') c.add(`listen[${i}]`, `${l} is a wildcard; bind only node-local addresses so this is never an open resolver`);
      else listen.push(hp);
    });
  }
  const addr = (key: string, dflt: string): string => {
    const v = c.str(top, key, '', dflt);
    if (v !== '' && typeof parseHostPort(v, undefined) === 'string') c.add(key, `want IP:PORT or "", got "${v}"`);
    return v;
  };
  const defaultsRaw = c.obj(top.defaults, 'defaults') ?? {};
  c.keys(defaultsRaw, 'defaults', ZONE_KEYS.filter((k) => k !== 'suffix' && k !== 'upstreams'));
  const base = zoneBase(c, defaultsRaw, 'defaults', { ...ZONE_DEFAULTS, cache: DEFAULT_CACHE, kubernetes: DEFAULT_KUBERNETES });

  const zones: ZoneSettings[] = [];
  const seen = new Map<string, number>();
  if (!Array.isArray(top.zones) || top.zones.length === 0) c.add('zones', 'want a non-empty list of zones (suffix + upstreams)');
  else {
    top.zones.forEach((z, i) => {
      const path = `zones[${i}]`;
      const raw = c.obj(z, path);
      if (!raw) return;
      c.keys(raw, path, ZONE_KEYS);
      const suffix = typeof raw.suffix === 'string' ? raw.suffix.trim() : '';
      if (suffix === '') c.add(`${path}.suffix`, 'want a domain suffix such as cluster.local or "."');
      else if (!validSuffix(suffix)) c.add(`${path}.suffix`, `"${suffix}" is not a valid domain name`);
      else {
        const w = wireName(suffix);
        const prev = seen.get(w);
        if (prev !== undefined) c.add(`${path}.suffix`, `"${suffix}" repeats zones[${prev}]`);
        seen.set(w, i);
      }
      const { kube, rest } = splitKubeSource(c, raw.upstreams, `${path}.upstreams`);
      // With a Kubernetes source the DNS upstreams are only the fallback, and may be none.
      const upstreams = kube !== undefined && Array.isArray(rest) && rest.length === 0 ? [] : parseUpstreams(c, rest, `${path}.upstreams`);
      const { kubernetes, ...zb } = zoneBase(c, raw, path, base);
      if (kube !== undefined && (suffix === '.' || /(^|\.)(in-addr|ip6)\.arpa\.?$/i.test(suffix))) {
        c.add(`${path}.upstreams`, `a Kubernetes source needs the cluster's domain (such as cluster.local), not "${suffix}" (reverse names are answered by every Kubernetes zone)`);
      }
      if (kube === undefined && raw.kubernetes !== undefined) c.add(`${path}.kubernetes`, 'kubernetes settings need a k8s: upstream in this zone');
      zones.push({
        suffix: suffix === '' ? '.' : suffix, upstreams, ...zb,
        ...(kube === undefined ? {} : { kubernetes: { kubeconfig: kube.kubeconfig, ...kubernetes } }),
      });
    });
  }
  const config: DnsCacheConfig = {
    listen,
    healthAddr: addr('health', '127.0.0.1:8080'),
    metricsAddr: addr('metrics', '127.0.0.1:9253'),
    setupInterface: c.bool(top, 'setup_interface', '', true),
    setupIptables: c.bool(top, 'setup_iptables', '', true),
    interfaceName: c.str(top, 'interface_name', '', 'nodelocaldns'),
    skipTeardown: c.bool(top, 'skip_teardown', '', false),
    udpSockets: c.int(top, 'udp_sockets', '', 1, 1, 64),
    udpIo: c.str(top, 'udp_io', '', 'batched') as UdpIo,
    tcp: tcpLimits(c, c.obj(top.tcp, 'tcp')),
    zones,
  };
  if (!UDP_IO.includes(config.udpIo)) c.add('udp_io', `"${config.udpIo}": want one of ${UDP_IO.join(', ')}`);
  if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(config.interfaceName)) c.add('interface_name', `"${config.interfaceName}" is not a valid interface name`);
  if (c.problems.length) throw dnsConfigError(source, c.problems);
  return config;
}

function validSuffix(s: string): boolean {
  if (s === '.') return true;
  const name = s.replace(/\.$/, '');
  if (name.length > 253) return false;
  return name.split('.').every((l) => l.length > 0 && l.length <= 63 && /^[A-Za-z0-9_-]+$/.test(l));
}

export function loadConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw dnsConfigError(path, [`cannot read the file: ${(e as Error).message}`]);
  }
  try {
    return parseYaml(text);
  } catch (e) {
    throw dnsConfigError(path, [`not valid YAML: ${(e as Error).message}`]);
  }
}
