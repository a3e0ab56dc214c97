// One service port of NodeState as the forwarder's listeners, and the
// Service addresses they need on the node. Every decision comes from the
// port's fields (proxy/ made them); this file only says which listener
// serves which of them.
import { canonicalIP, ipFamily } from '../../lib/net.ts';
import type { Endpoint, Family, ServicePortState } from '../../proxy/model.ts';
import { unsafeValue } from '../values.ts';
import { algorithms, listenerKey, type Algorithm, type EndpointSpec, type ListenerSpec, type Route } from './table.ts';

/** The node facts a translation needs (read from the kernel on full syncs). */
export interface NodeFacts {
  /**
   * Addresses NodePorts listen on (the node's own, within
   * --nodeport-addresses), or undefined when unknown (dump and explain read
   * no kernel): then NodePorts show as `*`.
   */
  readonly nodePortAddresses: readonly string[] | undefined;
  /** The node's own addresses: never added or removed as Service addresses. */
  readonly nodeAddresses: ReadonlySet<string>;
}

/** What one service port needs from the forwarder and the node. */
export interface PortListeners {
  readonly listeners: readonly ListenerSpec[];
  /** Service addresses to make local (cluster IP, externalIPs, load-balancer IPs), canonical. */
  readonly addresses: readonly string[];
  /** The algorithm asked for by annotation and not available here (the default is used). */
  readonly schedulerFallback?: string;
}

/** Why a port gets nothing from this mode. */
export type Unserved = { readonly refused: string } | { readonly unserved: string };

/** The algorithm for a scheduler name: the forwarder has rr, lc, p2c and sh. */
export function algorithmOf(name: string | undefined, fallback: Algorithm): { algorithm: Algorithm; missing?: string } {
  if (name === undefined) return { algorithm: fallback };
  if ((algorithms as readonly string[]).includes(name)) return { algorithm: name as Algorithm };
  return { algorithm: fallback, missing: name };
}

const spec = (e: Endpoint): EndpointSpec => ({ ip: canonicalIP(e.ip), port: e.port });

/**
 * The listeners of `s`: on its cluster IP; when it is reachable from outside
 * the cluster, on its externalIPs, its load-balancer IPs (behind the source
 * ranges when the firewall applies) and its NodePort on each NodePort
 * address of its family. One listener per address, port and protocol: an
 * address named twice serves once, in that order.
 */
export function portListeners(s: ServicePortState, facts: NodeFacts, families: readonly Family[], defaultAlgorithm: Algorithm): PortListeners | Unserved | undefined {
  if (!families.includes(s.family)) return undefined;
  if (s.protocol !== 'TCP' && s.protocol !== 'UDP') return { unserved: `${s.protocol} is not forwarded in userspace mode` };
  const bad = unsafeValue(s);
  if (bad !== undefined) return { refused: bad };
  const { algorithm, missing } = algorithmOf(s.scheduler?.name, defaultAlgorithm);
  const protocol = s.protocol;
  const common = { protocol, service: s.name, algorithm, affinitySeconds: s.affinityTimeoutSeconds } as const;
  const route = (eps: readonly Endpoint[]): Route => ({ endpoints: eps.map(spec), whenEmpty: s.noEndpointVerdict });

  const listeners = new Map<string, ListenerSpec>();
  const add = (l: ListenerSpec): void => {
    const key = listenerKey(l);
    if (!listeners.has(key)) listeners.set(key, l);
  };
  const clusterIP = canonicalIP(s.clusterIP);
  add({ ...common, ip: clusterIP, port: s.port, sourceRanges: [], remote: route(s.internalEndpoints) });

  const addresses = [clusterIP];
  if (s.externallyReachable) {
    const remote = route(s.externalEndpoints);
    // externalTrafficPolicy Local: clients inside the cluster short-circuit to every endpoint.
    const fromCluster = s.masqueradeExternal ? undefined : route(s.externalFromClusterEndpoints);
    const external = { ...common, remote, ...(fromCluster ? { fromCluster } : {}) };
    const externalIPs = s.externalIPs.map(canonicalIP);
    for (const ip of externalIPs) {
      add({ ...external, ip, port: s.port, sourceRanges: [] });
      addresses.push(ip);
    }
    for (const ip of s.loadBalancerIPs.map(canonicalIP)) {
      // The firewall is about load-balancer IPs; an address that is also an externalIP is served as one.
      add({ ...external, ip, port: s.port, sourceRanges: s.firewall ? [...s.firewallSources] : [] });
      addresses.push(ip);
    }
    if (s.nodePort !== 0) {
      for (const ip of facts.nodePortAddresses ?? [s.family === 4 ? '0.0.0.0' : '::']) {
        if (ipFamily(ip) === s.family) add({ ...external, ip, port: s.nodePort, sourceRanges: [] });
      }
    }
  }
  return {
    listeners: [...listeners.values()],
    addresses: [...new Set(addresses)].filter((a) => !facts.nodeAddresses.has(a)),
    ...(missing !== undefined ? { schedulerFallback: missing } : {}),
  };
}
