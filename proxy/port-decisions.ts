// The per-port decisions that every dataplane needs, made here once so no
// mode derives them again (kube-proxy's proxier code repeats them in each
// mode; kproxy's modes only translate them into kernel or forwarder state).
import { hostCIDR } from '../lib/net.ts';
import type { ServicePortState } from './model.ts';
import type { Categorised } from './endpoints.ts';
import { externallyReachable, type ServicePortInfo } from './service-ports.ts';

const none: readonly never[] = Object.freeze([]);

/** The decision fields of a ServicePortState (see model.ts for their meaning). */
export type PortDecisions = Pick<ServicePortState,
  'externallyReachable' | 'internalEndpoints' | 'externalEndpoints' | 'externalFromClusterEndpoints' |
  'masqueradeExternal' | 'firewall' | 'firewallSources' | 'noEndpointVerdict'>;

export function decide(info: ServicePortInfo, eps: Categorised): PortDecisions {
  const external = externallyReachable(info);
  const firewall = info.loadBalancerIPs.length > 0 && info.loadBalancerSourceRanges.length > 0;
  const externalEndpoints = !external ? none : info.externalPolicyLocal ? eps.localEndpoints : eps.clusterEndpoints;
  return {
    externallyReachable: external,
    internalEndpoints: info.internalPolicyLocal ? eps.localEndpoints : eps.clusterEndpoints,
    externalEndpoints,
    externalFromClusterEndpoints: external && info.externalPolicyLocal ? eps.clusterEndpoints : externalEndpoints,
    masqueradeExternal: !info.externalPolicyLocal,
    firewall,
    firewallSources: firewall ? [...info.loadBalancerSourceRanges, ...info.loadBalancerIPs.map(hostCIDR)] : none,
    noEndpointVerdict: eps.hasEndpoints ? 'drop' : 'reject',
  };
}

/** A complete ServicePortState from the Service's port and its categorised endpoints. */
export function resolvePort(info: ServicePortInfo, eps: Categorised): ServicePortState {
  return { ...info, ...eps, ...decide(info, eps) };
}
