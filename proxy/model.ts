// The one contract between the core (proxy/) and the dataplanes (modes/).
//
// A NodeState is already resolved for this node: endpoints are categorised
// (ready / serving / terminating fallback), topology hints and
// trafficDistribution are applied, and the traffic policies are split into
// clusterEndpoints and localEndpoints. Modes never re-implement Kubernetes
// semantics; they only translate this into kernel state.

import type { SchedulerChoice } from './scheduler.ts';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type Family = 4 | 6;

/** One backend address of a service port, as this node should use it. */
export interface Endpoint {
  readonly ip: string;
  readonly port: number;
  /** The endpoint's pod runs on this node (EndpointSlice nodeName). */
  readonly isLocal: boolean;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  /** Zone of the endpoint, when the slice says (for explain/dump only). */
  readonly zone?: string;
}

/**
 * One port of one Service, in one IP family. A dual-stack Service yields
 * two of these (one per family) with the same `name`.
 */
export interface ServicePortState {
  /**
   * kube-proxy's ServicePortName string: "namespace/name:portName", or
   * "namespace/name" when the port has no name. Together with protocol and
   * family it is unique; mode chain names hash `name` + lowercase protocol
   * as kube-proxy does.
   */
  readonly name: string;
  /** Unique key of this entry in NodeState.services: `${family}/${name}/${protocol}`. */
  readonly key: string;
  readonly namespace: string;
  readonly serviceName: string;
  readonly portName: string;
  readonly protocol: Protocol;
  readonly family: Family;

  readonly clusterIP: string;
  readonly port: number;
  /** 0 when the Service has no NodePort. */
  readonly nodePort: number;
  /** Only the addresses of this family. */
  readonly externalIPs: readonly string[];
  /** status.loadBalancer.ingress[].ip of this family. */
  readonly loadBalancerIPs: readonly string[];
  /** spec.loadBalancerSourceRanges of this family, as CIDRs; empty = allow all. */
  readonly loadBalancerSourceRanges: readonly string[];
  /** 0 unless externalTrafficPolicy is Local on a NodePort/LoadBalancer Service. */
  readonly healthCheckNodePort: number;
  /** ClientIP session affinity timeout in seconds, or 0 when affinity is None. */
  readonly affinityTimeoutSeconds: number;
  /**
   * The load-balancing algorithm the Service asks for by annotation
   * (proxy/scheduler.ts), checked; undefined: the node's default. Modes that
   * choose endpoints themselves (ipvs, userspace) read it.
   */
  readonly scheduler?: SchedulerChoice;

  /** externalTrafficPolicy: Local, and the Service is externally reachable. */
  readonly externalPolicyLocal: boolean;
  /** internalTrafficPolicy: Local. */
  readonly internalPolicyLocal: boolean;

  /**
   * Endpoints for traffic policy Cluster: ready endpoints after topology
   * filtering, or serving+terminating ones when none is ready. Empty when
   * no traffic to this port uses the Cluster policy.
   */
  readonly clusterEndpoints: readonly Endpoint[];
  /**
   * Endpoints for traffic policy Local: this node's ready endpoints, or its
   * serving+terminating ones when none is ready. Empty when no traffic to
   * this port uses the Local policy.
   */
  readonly localEndpoints: readonly Endpoint[];
  /** Union of clusterEndpoints and localEndpoints (no duplicates). */
  readonly allReachableEndpoints: readonly Endpoint[];
  /**
   * The Service has usable endpoints somewhere in the cluster. False means
   * traffic must be refused at once; true with no endpoints for a given
   * traffic source means that traffic is dropped (kube-proxy's semantics).
   */
  readonly hasEndpoints: boolean;

  // Decisions every mode needs, made once in proxy/port-decisions.ts. A mode
  // reads these; it never derives them again from the fields above.

  /** A NodePort, an externalIP or a load-balancer IP: traffic can arrive from outside the cluster. */
  readonly externallyReachable: boolean;
  /** Endpoints for traffic to the cluster IP, from anywhere (internalTrafficPolicy applied). */
  readonly internalEndpoints: readonly Endpoint[];
  /**
   * Endpoints for traffic from outside the cluster to an external address
   * (NodePort, externalIP, load-balancer IP), externalTrafficPolicy applied.
   * Empty when the port is not externally reachable.
   */
  readonly externalEndpoints: readonly Endpoint[];
  /**
   * Endpoints for traffic to an external address sent by a pod of the
   * cluster (source in the cluster CIDRs) or by the node itself. The
   * external policy is about clients outside the cluster, so with
   * externalTrafficPolicy Local this traffic short-circuits to the
   * cluster-wide endpoints, whether or not this node has a local one;
   * otherwise it equals externalEndpoints.
   */
  readonly externalFromClusterEndpoints: readonly Endpoint[];
  /**
   * Traffic from outside to an external address is masqueraded (its source
   * replaced by the node's): always, unless externalTrafficPolicy Local keeps
   * the client's address. Traffic to the cluster IP is masqueraded per node
   * settings (--masquerade-all, --cluster-cidr), the same for every port.
   */
  readonly masqueradeExternal: boolean;
  /**
   * The load-balancer source-range firewall applies: the port has load-balancer
   * IPs of this family and source ranges of this family. Only traffic to a
   * load-balancer IP from loadBalancerSourceRanges (or from a load-balancer IP
   * itself) gets through; NodePorts and externalIPs are not filtered.
   */
  readonly firewall: boolean;
  /**
   * With the firewall, the sources allowed through (CIDRs of this family):
   * the source ranges plus each load-balancer IP itself, as kube-proxy
   * allows (load balancers that send traffic from their own address).
   * Empty without the firewall.
   */
  readonly firewallSources: readonly string[];
  /**
   * What happens to traffic whose source has no endpoint to go to:
   * 'reject' (refused at once: a TCP reset, an ICMP port-unreachable for
   * UDP and SCTP) when the Service has no usable endpoint anywhere, 'drop'
   * when it has some but none for that traffic (a Local policy on a node
   * without local endpoints).
   */
  readonly noEndpointVerdict: 'reject' | 'drop';
}

/** Everything the dataplane needs, for one node, at one moment. */
export interface NodeState {
  readonly nodeName: string;
  /** This node's addresses (Node status InternalIP/ExternalIP), both families. */
  readonly nodeIPs: readonly string[];
  /** Keyed by ServicePortState.key. Iteration order is not significant. */
  readonly services: ReadonlyMap<string, ServicePortState>;
}

/** A UDP flow target that went away: its conntrack entries must be deleted. */
export interface StaleUdpEndpoint {
  readonly family: Family;
  /** Service addresses the flows were sent to (clusterIP, externalIPs, LB IPs). */
  readonly serviceIPs: readonly string[];
  readonly servicePort: number;
  /** 0 when the Service has no NodePort. */
  readonly nodePort: number;
  readonly endpointIP: string;
  readonly endpointPort: number;
}

/** A UDP service address (and NodePort) whose flows may hold a cached REJECT. */
export interface StaleUdpServiceIP {
  readonly family: Family;
  readonly ip: string;
  readonly port: number;
  /** The service port's NodePort, when it has one: its flows met the REJECT too. */
  readonly nodePort?: number;
}

/**
 * What changed since the previous snapshot. `services` holds the keys of
 * service ports that were added, changed or removed (a removed key is absent
 * from NodeState.services). When `full` is true a mode must rewrite
 * everything it owns and remove what is stale.
 */
export interface Changes {
  readonly full: boolean;
  readonly services: ReadonlySet<string>;
  readonly staleUdpEndpoints: readonly StaleUdpEndpoint[];
  /**
   * UDP service addresses whose port went from no endpoints to some: flows
   * cached with a REJECT verdict must be cleared (conntrack -D --orig-dst).
   */
  readonly staleUdpServiceIPs: readonly StaleUdpServiceIP[];
}

export function serviceKey(family: Family, name: string, protocol: Protocol): string {
  return `${family}/${name}/${protocol}`;
}

export const noChanges: Changes = Object.freeze({
  full: false,
  services: new Set<string>(),
  staleUdpEndpoints: [],
  staleUdpServiceIPs: [],
});

export function fullChanges(state: NodeState): Changes {
  return { full: true, services: new Set(state.services.keys()), staleUdpEndpoints: [], staleUdpServiceIPs: [] };
}
