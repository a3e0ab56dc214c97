// Endpoints of a Service from its EndpointSlices, and their categorisation
// for this node (kube-proxy's endpointslicecache and CategorizeEndpoints).
import type { V1EndpointSlice } from '@kubernetes/client-node';
import type { Endpoint, Family, ServicePortState } from './model.ts';
import { usesClusterEndpoints, usesLocalEndpoints, type ServicePortInfo } from './service-ports.ts';
import { topologyFilter, type TopologyPreference } from './topology.ts';

export { serviceNameLabel } from './validate.ts';

/** An endpoint with the hints only categorisation needs. */
export interface SliceEndpoint {
  readonly ep: Endpoint;
  readonly ready: boolean;
  readonly zoneHints?: readonly string[];
  readonly nodeHints?: readonly string[];
  /** Orders endpoints canonically, so moving one between slices changes nothing. */
  readonly sortKey: number | string;
}

/** Key of a port within a Service's endpoints: slice ports match service ports by name and protocol. */
export function portKey(portName: string, protocol: string): string {
  return `${portName}/${protocol}`;
}

/** IPv4 address and port as one number (address * 65536 + port), so endpoints sort numerically. */
function v4SortKey(ip: string, port: number): number {
  let value = 0, octet = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      value = value * 256 + octet;
      octet = 0;
    } else {
      octet = octet * 10 + c - 48;
    }
  }
  return (value * 256 + octet) * 65536 + port;
}

/** IPv6 address expanded to fixed-width groups, so string order follows address order. */
function v6SortKey(ip: string, port: number): string {
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.map((g) => g.padStart(4, '0')).join(':')}:${String(port).padStart(5, '0')}`;
}

/**
 * A Service's endpoints of one family, by portKey. Slices of the other
 * family and FQDN slices contribute nothing. An address listed by several
 * slices counts once; a ready copy wins over a not-ready one.
 */
export function collectEndpoints(
  slices: readonly V1EndpointSlice[], family: Family, nodeName: string,
): Map<string, SliceEndpoint[]> {
  const addressType = family === 4 ? 'IPv4' : 'IPv6';
  const ordered = slices.filter((s) => s.addressType === addressType)
    .sort((a, b) => (a.metadata!.name! < b.metadata!.name! ? -1 : 1));
  const byPort = new Map<string, Map<string, SliceEndpoint>>();
  for (const slice of ordered) {
    for (const port of slice.ports ?? []) {
      if (!port.port) continue;
      const key = portKey(port.name ?? '', port.protocol ?? 'TCP');
      let set = byPort.get(key);
      if (!set) byPort.set(key, set = new Map());
      for (const e of slice.endpoints ?? []) {
        const ip = e.addresses[0];
        const ready = e.conditions?.ready ?? true;
        const id = `${ip}:${port.port}`;
        const existing = set.get(id);
        if (existing && !(ready && !existing.ready)) continue;
        const serving = e.conditions?.serving ?? ready;
        const ep: { -readonly [K in keyof Endpoint]: Endpoint[K] } = {
          ip, port: port.port!, isLocal: e.nodeName === nodeName, ready, serving,
          terminating: e.conditions?.terminating ?? false,
        };
        if (e.zone) ep.zone = e.zone;
        set.set(id, {
          ep, ready,
          zoneHints: e.hints?.forZones?.map((z) => z.name),
          nodeHints: e.hints?.forNodes?.map((n) => n.name),
          sortKey: family === 4 ? v4SortKey(ip, port.port!) : v6SortKey(ip, port.port!),
        });
      }
    }
  }
  const out = new Map<string, SliceEndpoint[]>();
  for (const [key, set] of byPort) {
    out.set(key, [...set.values()].sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0)));
  }
  return out;
}

export type Categorised = Pick<ServicePortState, 'clusterEndpoints' | 'localEndpoints' | 'allReachableEndpoints' | 'hasEndpoints'>;

const none: readonly Endpoint[] = Object.freeze([]);

/**
 * Splits a port's endpoints into those the Cluster and the Local traffic
 * policies use, as kube-proxy's CategorizeEndpoints does: ready endpoints
 * (after topology filtering) first, serving+terminating ones as a fallback
 * when no ready one exists.
 */
export function categorizeEndpoints(
  endpoints: readonly SliceEndpoint[], info: ServicePortInfo,
  preference: TopologyPreference, nodeName: string, zone: string | undefined,
): Categorised {
  let clusterEndpoints: readonly Endpoint[] = none;
  let localEndpoints: readonly Endpoint[] = none;
  let hasEndpoints = false;
  let topology = false;

  if (usesClusterEndpoints(info)) {
    const filter = topologyFilter(endpoints, preference, nodeName, zone);
    topology = filter !== undefined;
    clusterEndpoints = endpoints.filter((e) => e.ready && (!filter || filter(e))).map((e) => e.ep);
    if (clusterEndpoints.length === 0) {
      clusterEndpoints = endpoints.filter((e) => e.ep.serving && e.ep.terminating).map((e) => e.ep);
    }
    // Any ready endpoint anywhere lands in clusterEndpoints (topology falls
    // back to all when none is for this zone), so this is the whole answer.
    hasEndpoints = clusterEndpoints.length > 0;
  }
  if (!usesLocalEndpoints(info)) {
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasEndpoints };
  }

  let localReady = false, localTerminating = false;
  for (const { ep } of endpoints) {
    if (ep.ready) {
      hasEndpoints = true;
      if (ep.isLocal) localReady = true;
    } else if (ep.serving && ep.terminating) {
      hasEndpoints = true;
      if (ep.isLocal) localTerminating = true;
    }
  }
  if (localReady) {
    localEndpoints = endpoints.filter((e) => e.ep.isLocal && e.ep.ready).map((e) => e.ep);
  } else if (localTerminating) {
    localEndpoints = endpoints.filter((e) => e.ep.isLocal && e.ep.serving && e.ep.terminating).map((e) => e.ep);
  }
  if (!usesClusterEndpoints(info)) {
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: localEndpoints, hasEndpoints };
  }
  // Without topology and with ready local endpoints, every local endpoint
  // is already a cluster endpoint; otherwise the two lists must be merged.
  if (!topology && (localReady || !localTerminating)) {
    return { clusterEndpoints, localEndpoints, allReachableEndpoints: clusterEndpoints, hasEndpoints };
  }
  const seen = new Set(clusterEndpoints);
  const allReachableEndpoints = [...clusterEndpoints, ...localEndpoints.filter((ep) => !seen.has(ep))];
  return { clusterEndpoints, localEndpoints, allReachableEndpoints, hasEndpoints };
}
