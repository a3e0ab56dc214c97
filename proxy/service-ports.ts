// Turns one Service into its service ports for one IP family: everything of
// a ServicePortState except the endpoints (kube-proxy's servicechangetracker
// and BaseServicePortInfo).
import type { V1Service } from '@kubernetes/client-node';
import { serviceKey, type Endpoint, type Family, type Protocol, type ServicePortState } from './model.ts';
import type { PortDecisions } from './port-decisions.ts';
import { sameScheduler, type SchedulerChoice } from './scheduler.ts';
import { cidrFamily, ipFamily } from '../lib/net.ts';
import { serviceSourceRanges } from './validate.ts';

/** A ServicePortState without its endpoints. */
export type ServicePortInfo = Omit<ServicePortState,
  'clusterEndpoints' | 'localEndpoints' | 'allReachableEndpoints' | 'hasEndpoints' | keyof PortDecisions>;

/** Services carrying this label belong to another proxy. */
export const serviceProxyNameLabel = 'service.kubernetes.io/service-proxy-name';
export const defaultAffinityTimeoutSeconds = 10800;

/** Why kproxy does not proxy this Service at all, or undefined when it does. */
export function skipReason(svc: V1Service): string | undefined {
  if (svc.metadata?.labels?.[serviceProxyNameLabel] !== undefined) return `labelled ${serviceProxyNameLabel}`;
  const spec = svc.spec;
  if (spec?.type === 'ExternalName') return 'type ExternalName';
  if (spec?.clusterIP === 'None') return 'headless';
  if (!spec?.clusterIP && !(spec?.clusterIPs?.length)) return 'no clusterIP';
  return undefined;
}

/** kube-proxy's ServicePortName string: "namespace/name:port" or "namespace/name". */
export function servicePortName(namespace: string, name: string, portName: string): string {
  return portName ? `${namespace}/${name}:${portName}` : `${namespace}/${name}`;
}

/** The Service's cluster IP of this family (spec.clusterIPs holds one per family). */
export function clusterIPOf(svc: V1Service, family: Family): string | undefined {
  const ips = svc.spec?.clusterIPs?.length ? svc.spec.clusterIPs : [svc.spec?.clusterIP ?? ''];
  return ips.find((ip) => ipFamily(ip) === family);
}

function uniqueOfFamily(values: Iterable<string>, family: Family, familyOf: (v: string) => number): string[] {
  const out: string[] = [];
  for (const v of values) if (familyOf(v) === family && !out.includes(v)) out.push(v);
  return out;
}

/**
 * The service ports of a Service that kproxy proxies, for one family; empty
 * when the Service has no cluster IP of that family. The Service must have
 * passed validateService and skipReason.
 */
export function servicePortInfos(svc: V1Service, family: Family, scheduler?: SchedulerChoice): ServicePortInfo[] {
  const spec = svc.spec!;
  const clusterIP = clusterIPOf(svc, family);
  if (!clusterIP) return [];
  const namespace = svc.metadata!.namespace!;
  const serviceName = svc.metadata!.name!;
  const type = spec.type ?? 'ClusterIP';

  const externalIPs = uniqueOfFamily(spec.externalIPs ?? [], family, ipFamily);
  // An ingress with ipMode Proxy is reached through the load balancer's own
  // proxy, never with the VIP as destination: kube-proxy leaves it out.
  const lbIngress = (svc.status?.loadBalancer?.ingress ?? [])
    .filter((ing) => ing.ip && ing.ipMode !== 'Proxy')
    .map((ing) => ing.ip!);
  const loadBalancerIPs = uniqueOfFamily(lbIngress, family, ipFamily);
  const loadBalancerSourceRanges = uniqueOfFamily(serviceSourceRanges(svc), family, cidrFamily);
  const affinityTimeoutSeconds = spec.sessionAffinity === 'ClientIP'
    ? spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? defaultAffinityTimeoutSeconds
    : 0;
  const etpLocal = spec.externalTrafficPolicy === 'Local';
  const healthCheckNodePort = etpLocal && (type === 'LoadBalancer' || type === 'NodePort') ? spec.healthCheckNodePort ?? 0 : 0;
  const internalPolicyLocal = spec.internalTrafficPolicy === 'Local';

  return (spec.ports ?? []).map((p) => {
    const portName = p.name ?? '';
    const protocol = (p.protocol ?? 'TCP') as Protocol;
    const name = servicePortName(namespace, serviceName, portName);
    const nodePort = p.nodePort ?? 0;
    return {
      name, key: serviceKey(family, name, protocol), namespace, serviceName, portName, protocol, family,
      clusterIP, port: p.port, nodePort, externalIPs, loadBalancerIPs, loadBalancerSourceRanges,
      healthCheckNodePort, affinityTimeoutSeconds, ...(scheduler ? { scheduler } : {}),
      externalPolicyLocal: etpLocal && externallyReachable({ nodePort, externalIPs, loadBalancerIPs }),
      internalPolicyLocal,
    };
  });
}

/** Traffic to this port uses the Cluster policy (kube-proxy's UsesClusterEndpoints). */
export function usesClusterEndpoints(info: ServicePortInfo): boolean {
  // External traffic with policy Local still needs cluster endpoints for
  // pods and the node itself reaching the external address (short-circuit).
  return !info.internalPolicyLocal || externallyReachable(info);
}

/** Traffic to this port uses the Local policy (kube-proxy's UsesLocalEndpoints). */
export function usesLocalEndpoints(info: ServicePortInfo): boolean {
  return info.internalPolicyLocal || info.externalPolicyLocal;
}

/** A NodePort, an externalIP or a load-balancer IP: traffic can arrive from outside the cluster. */
export function externallyReachable(info: Pick<ServicePortInfo, 'nodePort' | 'externalIPs' | 'loadBalancerIPs'>): boolean {
  return info.nodePort !== 0 || info.externalIPs.length > 0 || info.loadBalancerIPs.length > 0;
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (x === y) continue;
    if (x.ip !== y.ip || x.port !== y.port || x.isLocal !== y.isLocal || x.ready !== y.ready ||
      x.serving !== y.serving || x.terminating !== y.terminating || x.zone !== y.zone) return false;
  }
  return true;
}

/** Two states of a service port program the dataplane identically. */
export function samePortState(a: ServicePortState, b: ServicePortState): boolean {
  return a === b || (
    a.key === b.key && a.clusterIP === b.clusterIP && a.port === b.port && a.nodePort === b.nodePort &&
    a.healthCheckNodePort === b.healthCheckNodePort && a.affinityTimeoutSeconds === b.affinityTimeoutSeconds &&
    sameScheduler(a.scheduler, b.scheduler) &&
    a.externalPolicyLocal === b.externalPolicyLocal && a.internalPolicyLocal === b.internalPolicyLocal &&
    a.hasEndpoints === b.hasEndpoints &&
    sameStrings(a.externalIPs, b.externalIPs) && sameStrings(a.loadBalancerIPs, b.loadBalancerIPs) &&
    sameStrings(a.loadBalancerSourceRanges, b.loadBalancerSourceRanges) &&
    sameEndpoints(a.clusterEndpoints, b.clusterEndpoints) && sameEndpoints(a.localEndpoints, b.localEndpoints) &&
    sameEndpoints(a.allReachableEndpoints, b.allReachableEndpoints));
}
