// Compact builders of NodeState for mode tests: every field defaulted, so a
// test names only what it is about.
import { serviceKey, type Endpoint, type NodeState, type ServicePortState } from '../../proxy/model.ts';
import { resolvePort, type PortDecisions } from '../../proxy/port-decisions.ts';

export function ep(ip: string, port: number, extra: Partial<Endpoint> = {}): Endpoint {
  return { ip, port, isLocal: false, ready: true, serving: true, terminating: false, ...extra };
}

type SvcInput = Partial<Omit<ServicePortState, keyof PortDecisions>> & { name: string; clusterIP: string; port: number };

export function svc(input: SvcInput): ServicePortState {
  const protocol = input.protocol ?? 'TCP';
  const family = input.family ?? (input.clusterIP.includes(':') ? 6 : 4);
  const [nsName, portName = ''] = input.name.split(':');
  const [namespace, serviceName] = nsName.split('/');
  const clusterEndpoints = input.clusterEndpoints ?? [];
  const localEndpoints = input.localEndpoints ?? [];
  const all = input.allReachableEndpoints ??
    [...clusterEndpoints, ...localEndpoints.filter((l) => !clusterEndpoints.some((c) => c.ip === l.ip && c.port === l.port))];
  const { clusterEndpoints: _c, localEndpoints: _l, allReachableEndpoints: _a, hasEndpoints = all.length > 0, ...info } = input;
  // The decisions are made by the core's own code, as the tracker makes them.
  return resolvePort({
    namespace, serviceName, portName, protocol, family,
    nodePort: 0, externalIPs: [], loadBalancerIPs: [], loadBalancerSourceRanges: [],
    healthCheckNodePort: 0, affinityTimeoutSeconds: 0,
    externalPolicyLocal: false, internalPolicyLocal: false,
    ...info,
    key: serviceKey(family, input.name, protocol),
  }, { clusterEndpoints, localEndpoints, allReachableEndpoints: all, hasEndpoints });
}

export function nodeState(services: readonly ServicePortState[], nodeName = 'node-a', nodeIPs: string[] = ['192.168.0.2']): NodeState {
  return { nodeName, nodeIPs, services: new Map(services.map((s) => [s.key, s])) };
}

/** `s` with some of its inputs changed, its decisions made again (as a new snapshot would). */
export function withPort(s: ServicePortState, patch: Partial<Omit<ServicePortState, keyof PortDecisions | 'key'>>): ServicePortState {
  const next = { ...s, ...patch };
  return svc({ ...next, clusterEndpoints: next.clusterEndpoints, localEndpoints: next.localEndpoints, allReachableEndpoints: next.allReachableEndpoints, hasEndpoints: next.hasEndpoints });
}
