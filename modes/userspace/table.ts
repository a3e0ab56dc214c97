// The forwarder's input: a plain table of listeners, each an address, port
// and protocol with the endpoints every kind of client uses. The userspace
// backend translates NodeState into this; the engine knows nothing else of
// Kubernetes. Tables arrive from outside the process that forwards (over
// IPC), so every field is checked and every problem listed at once.
import { inCIDR, ipFamily, cidrFamily, hostPort } from '../../lib/net.ts';
import { KproxyError } from '../../lib/errors.ts';

export type Algorithm = 'rr' | 'lc' | 'p2c' | 'sh';
export const algorithms: readonly Algorithm[] = ['rr', 'lc', 'p2c', 'sh'];

/** What a client whose endpoint list is empty gets. */
export type Verdict = 'reject' | 'drop';

export type ListenerProtocol = 'TCP' | 'UDP';

export interface EndpointSpec {
  readonly ip: string;
  readonly port: number;
}

/** The endpoints one kind of client uses, and the verdict when there are none. */
export interface Route {
  readonly endpoints: readonly EndpointSpec[];
  readonly whenEmpty: Verdict;
}

export interface ListenerSpec {
  /** The address bound: a Service address, a node address for NodePorts, or 0.0.0.0 / :: (TCP only). */
  readonly ip: string;
  readonly port: number;
  readonly protocol: ListenerProtocol;
  /**
   * The Service port this listener serves ("namespace/name:port"): the label
   * of its metrics, and the scope of its ClientIP affinity (every listener of
   * one Service port shares it).
   */
  readonly service: string;
  readonly algorithm: Algorithm;
  /** ClientIP affinity timeout in seconds; 0 = no affinity. */
  readonly affinitySeconds: number;
  /** Client addresses allowed (CIDRs); empty = every client. Others are dropped. */
  readonly sourceRanges: readonly string[];
  /** Clients outside the cluster (and every client when `fromCluster` is absent). */
  readonly remote: Route;
  /**
   * Clients inside the cluster (`clusterSources`: the pods' ranges and this
   * node's own addresses, the listener's own address included) when they use
   * another list than `remote`: externalTrafficPolicy Local, whose Local
   * applies to clients outside the cluster only.
   */
  readonly fromCluster?: Route;
}

export interface ForwarderTable {
  /** CIDRs of the clients `fromCluster` routes apply to: the pods' ranges (--cluster-cidr) and this node's addresses. */
  readonly clusterSources: readonly string[];
  readonly listeners: readonly ListenerSpec[];
}

export const emptyTable: ForwarderTable = { clusterSources: [], listeners: [] };

/** "TCP/10.96.0.10:80": a listener's identity within a table. */
export function listenerKey(l: { protocol: ListenerProtocol; ip: string; port: number }): string {
  return `${l.protocol}/${hostPort(l.ip, l.port)}`;
}

/** "10.180.0.11:8080": an endpoint's identity (health and connection counts are kept per endpoint). */
export function endpointKey(e: EndpointSpec): string {
  return hostPort(e.ip, e.port);
}

/** The route a client at `clientIP` uses on `l`. */
export function routeFor(l: ListenerSpec, clientIP: string, clusterSources: readonly string[]): Route {
  if (l.fromCluster !== undefined && (clientIP === l.ip || clusterSources.some((c) => inCIDR(clientIP, c)))) return l.fromCluster;
  return l.remote;
}

/**
 * Whether every client of `l` is refused (no endpoint in any route, and
 * refusal as the verdict). Such a UDP listener is not bound, so the kernel
 * answers with ICMP port unreachable.
 */
export function refusesAll(l: ListenerSpec): boolean {
  const refuses = (r: Route | undefined) => r === undefined || (r.endpoints.length === 0 && r.whenEmpty === 'reject');
  return refuses(l.remote) && refuses(l.fromCluster);
}

/** Whether `clientIP` may use `l` at all (its source ranges). */
export function sourceAllowed(l: ListenerSpec, clientIP: string): boolean {
  return l.sourceRanges.length === 0 || l.sourceRanges.some((c) => inCIDR(clientIP, c));
}

const isPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function checkRoute(where: string, v: unknown, family: number, problems: string[]): Route | undefined {
  if (!isObject(v)) {
    problems.push(`${where}: must be an object with endpoints and whenEmpty`);
    return undefined;
  }
  const endpoints: EndpointSpec[] = [];
  if (!Array.isArray(v.endpoints)) problems.push(`${where}.endpoints: must be a list`);
  else {
    v.endpoints.forEach((e: unknown, i: number) => {
      if (!isObject(e) || typeof e.ip !== 'string' || ipFamily(e.ip) === 0 || !isPort(e.port)) {
        problems.push(`${where}.endpoints[${i}]: needs an IP address and a port 1-65535`);
      } else if (family !== 0 && ipFamily(e.ip) !== family) {
        problems.push(`${where}.endpoints[${i}]: ${e.ip} is not of the listener's IP family`);
      } else endpoints.push({ ip: e.ip, port: e.port });
    });
  }
  if (v.whenEmpty !== 'reject' && v.whenEmpty !== 'drop') problems.push(`${where}.whenEmpty: must be reject or drop`);
  return { endpoints, whenEmpty: v.whenEmpty === 'drop' ? 'drop' : 'reject' };
}

function checkListener(i: number, v: unknown, problems: string[]): ListenerSpec | undefined {
  const where = `listeners[${i}]`;
  if (!isObject(v)) {
    problems.push(`${where}: must be an object`);
    return undefined;
  }
  const before = problems.length;
  const family = typeof v.ip === 'string' ? ipFamily(v.ip) : 0;
  if (family === 0) problems.push(`${where}.ip: not an IP address: ${String(v.ip)}`);
  if (!isPort(v.port)) problems.push(`${where}.port: must be an integer 1-65535`);
  if (v.protocol !== 'TCP' && v.protocol !== 'UDP') problems.push(`${where}.protocol: must be TCP or UDP (SCTP is not forwarded)`);
  // A wildcard UDP socket would answer from whichever address the kernel picks, not the one the client used.
  if (v.protocol === 'UDP' && (v.ip === '0.0.0.0' || v.ip === '::')) problems.push(`${where}.ip: a UDP listener needs a concrete address`);
  if (typeof v.service !== 'string' || v.service.length === 0) problems.push(`${where}.service: must be a non-empty string`);
  if (!algorithms.includes(v.algorithm as Algorithm)) problems.push(`${where}.algorithm: must be one of ${algorithms.join(', ')}`);
  const affinity = v.affinitySeconds;
  if (!Number.isInteger(affinity) || (affinity as number) < 0 || (affinity as number) > 86400) problems.push(`${where}.affinitySeconds: must be an integer 0-86400`);
  const ranges: string[] = [];
  if (!Array.isArray(v.sourceRanges)) problems.push(`${where}.sourceRanges: must be a list of CIDRs`);
  else {
    for (const c of v.sourceRanges) {
      if (typeof c !== 'string' || cidrFamily(c) === 0) problems.push(`${where}.sourceRanges: not a CIDR: ${String(c)}`);
      else if (cidrFamily(c) === family) ranges.push(c);
      else problems.push(`${where}.sourceRanges: ${c} is not of the listener's IP family`);
    }
  }
  const remote = checkRoute(`${where}.remote`, v.remote, family, problems);
  const fromCluster = v.fromCluster === undefined ? undefined : checkRoute(`${where}.fromCluster`, v.fromCluster, family, problems);
  if (problems.length > before || remote === undefined) return undefined;
  return {
    ip: v.ip as string, port: v.port as number, protocol: v.protocol as ListenerProtocol, service: v.service as string,
    algorithm: v.algorithm as Algorithm, affinitySeconds: affinity as number, sourceRanges: ranges, remote,
    ...(fromCluster ? { fromCluster } : {}),
  };
}

/**
 * Checks a table that came from outside (e.g. over IPC) and returns a clean
 * copy; throws one KproxyError listing every problem. Duplicate listeners
 * are a problem too: a table is one answer per address, port and protocol.
 */
export function validateTable(v: unknown): ForwarderTable {
  const problems: string[] = [];
  if (!isObject(v)) throw new KproxyError('KPROXY_FORWARDER_TABLE_INVALID', 'forwarder table: must be an object with clusterSources and listeners');
  const sources: string[] = [];
  if (!Array.isArray(v.clusterSources)) problems.push('clusterSources: must be a list of CIDRs');
  else {
    for (const c of v.clusterSources) {
      if (typeof c === 'string' && cidrFamily(c) !== 0) sources.push(c);
      else problems.push(`clusterSources: not a CIDR: ${String(c)}`);
    }
  }
  const listeners: ListenerSpec[] = [];
  const seen = new Set<string>();
  if (!Array.isArray(v.listeners)) problems.push('listeners: must be a list');
  else {
    v.listeners.forEach((l: unknown, i: number) => {
      const spec = checkListener(i, l, problems);
      if (spec === undefined) return;
      const key = listenerKey(spec);
      if (seen.has(key)) problems.push(`listeners[${i}]: ${key} appears twice`);
      else {
        seen.add(key);
        listeners.push(spec);
      }
    });
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    const more = problems.length > shown.length ? `\n  ... and ${problems.length - shown.length} more` : '';
    throw new KproxyError('KPROXY_FORWARDER_TABLE_INVALID', `forwarder table (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${shown.map((p) => `  - ${p}`).join('\n')}${more}`);
  }
  return { clusterSources: sources, listeners };
}
