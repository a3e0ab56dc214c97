// Topology-aware routing: which endpoints this node prefers, from the hints
// the EndpointSlice controller writes (kube-proxy's canUseTopology and
// topologyModeFromHints).
import type { V1Service } from '@kubernetes/client-node';

export const zoneLabel = 'topology.kubernetes.io/zone';
export const topologyModeAnnotation = 'service.kubernetes.io/topology-mode';
export const topologyHintsAnnotation = 'service.kubernetes.io/topology-aware-hints';

/** What a Service asks for: none, same zone, or same node then same zone. */
export type TopologyPreference = 'none' | 'zone' | 'node';

/** An endpoint's hints, as the slice carries them. */
export interface Hinted {
  readonly ready: boolean;
  readonly zoneHints?: readonly string[];
  readonly nodeHints?: readonly string[];
}

export function servicePreference(svc: V1Service): TopologyPreference {
  switch (svc.spec?.trafficDistribution) {
    case 'PreferSameNode': return 'node';
    case 'PreferClose':
    case 'PreferSameZone': return 'zone';
  }
  const annotations = svc.metadata?.annotations ?? {};
  const mode = annotations[topologyModeAnnotation] ?? annotations[topologyHintsAnnotation];
  return mode === 'Auto' || mode === 'auto' ? 'zone' : 'none';
}

/**
 * The filter that keeps the endpoints this node should prefer, or undefined
 * when every endpoint is to be used: the Service asks for nothing, the node
 * has no zone, a ready endpoint lacks hints, or no hint names this node/zone
 * (kube-proxy then falls back to all endpoints, so traffic is never lost).
 */
export function topologyFilter(
  endpoints: readonly Hinted[], preference: TopologyPreference, nodeName: string, zone: string | undefined,
): ((ep: Hinted) => boolean) | undefined {
  if (preference === 'none') return undefined;
  let allNodeHints = true, forNode = false, allZoneHints = true, forZone = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    if (!ep.nodeHints?.length) allNodeHints = false;
    else if (ep.nodeHints.includes(nodeName)) forNode = true;
    if (!ep.zoneHints?.length) allZoneHints = false;
    else if (zone && ep.zoneHints.includes(zone)) forZone = true;
  }
  if (preference === 'node' && allNodeHints && forNode) return (ep) => ep.nodeHints?.includes(nodeName) ?? false;
  if (allZoneHints && forZone) return (ep) => ep.zoneHints?.includes(zone!) ?? false;
  return undefined;
}
