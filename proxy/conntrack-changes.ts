// UDP conntrack entries that a change leaves stale (after kube-proxy's
// detectStaleConntrackEntries). UDP has no connection to end, so a flow
// keeps its NAT target until its conntrack entry is deleted.
import type { ServicePortState, StaleUdpEndpoint, StaleUdpServiceIP } from './model.ts';

function serviceIPs(s: ServicePortState): string[] {
  return [s.clusterIP, ...s.externalIPs, ...s.loadBalancerIPs];
}

/**
 * Adds what one service port's change leaves stale:
 * - an endpoint that was reachable and no longer is: every flow to it
 *   through the port's old addresses (and NodePort);
 * - an endpoint still reachable, through addresses (or a NodePort) the port
 *   no longer has: the flows through those;
 * - a port that had no reachable endpoint and now has one: flows that met
 *   the REJECT verdict, by service address and NodePort.
 */
export function addStaleUdp(
  before: ServicePortState | undefined, after: ServicePortState | undefined,
  endpoints: StaleUdpEndpoint[], serviceIPsOut: StaleUdpServiceIP[],
): void {
  if ((before ?? after)!.protocol !== 'UDP') return;
  if (before && before.allReachableEndpoints.length > 0) {
    const oldIPs = serviceIPs(before);
    const now = new Set<string>();
    if (after) for (const ep of after.allReachableEndpoints) now.add(`${ep.ip}|${ep.port}`);
    const newIPs = after && after.port === before.port ? new Set(serviceIPs(after)) : new Set<string>();
    const goneIPs = oldIPs.filter((ip) => !newIPs.has(ip));
    const goneNodePort = after && after.nodePort === before.nodePort ? 0 : before.nodePort;
    for (const ep of before.allReachableEndpoints) {
      const still = now.has(`${ep.ip}|${ep.port}`);
      if (still && goneIPs.length === 0 && goneNodePort === 0) continue;
      endpoints.push({
        family: before.family, serviceIPs: still ? goneIPs : oldIPs, servicePort: before.port,
        nodePort: still ? goneNodePort : before.nodePort, endpointIP: ep.ip, endpointPort: ep.port,
      });
    }
  }
  if (after && after.allReachableEndpoints.length > 0 && !(before && before.allReachableEndpoints.length > 0)) {
    for (const ip of serviceIPs(after)) {
      serviceIPsOut.push(after.nodePort > 0 ? { family: after.family, ip, port: after.port, nodePort: after.nodePort } : { family: after.family, ip, port: after.port });
    }
  }
}
