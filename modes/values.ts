// The last check before a renderer turns a service port into kernel text:
// every address, CIDR and number it will write is well-formed. The core has
// validated the objects already; a renderer still emits only text it has
// checked, and a port that fails is left out of the batch (and reported),
// never the whole batch.
import { cidrFamily, ipFamily } from '../lib/net.ts';
import type { ServicePortState } from '../proxy/model.ts';

/** A service port that a renderer leaves out, and why. */
export interface RefusedPort {
  readonly key: string;
  readonly reason: string;
}

const isPort = (n: number, zero = false): boolean => Number.isInteger(n) && n <= 65535 && (n >= 1 || (zero && n === 0));

/** Why this port's values cannot be written into a batch, or undefined when they can. */
export function unsafeValue(s: ServicePortState): string | undefined {
  const family = s.family;
  if (ipFamily(s.clusterIP) !== family) return `cluster IP ${JSON.stringify(s.clusterIP)} is not an IPv${family} address`;
  if (!isPort(s.port)) return `port ${s.port} is out of range`;
  if (!isPort(s.nodePort, true)) return `nodePort ${s.nodePort} is out of range`;
  if (!isPort(s.healthCheckNodePort, true)) return `healthCheckNodePort ${s.healthCheckNodePort} is out of range`;
  if (!Number.isInteger(s.affinityTimeoutSeconds) || s.affinityTimeoutSeconds < 0) return `affinity timeout ${s.affinityTimeoutSeconds} is not a whole number of seconds`;
  for (const list of [s.externalIPs, s.loadBalancerIPs]) {
    for (const ip of list) if (ipFamily(ip) !== family) return `address ${JSON.stringify(ip)} is not an IPv${family} address`;
  }
  for (const list of [s.loadBalancerSourceRanges, s.firewallSources]) {
    for (const c of list) if (cidrFamily(c) !== family) return `source range ${JSON.stringify(c)} is not an IPv${family} CIDR`;
  }
  // Every endpoint of a full sync passes here (100,000 at 10,000 Services): a plain loop.
  const eps = s.allReachableEndpoints;
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i];
    if (ipFamily(e.ip) !== family) return `endpoint address ${JSON.stringify(e.ip)} is not an IPv${family} address`;
    if (!isPort(e.port)) return `endpoint port ${e.port} is out of range`;
  }
  return undefined;
}

/** Printable ASCII of a sane length: text a rule comment may carry as it is. */
export function isPrintable(text: string, max = 200): boolean {
  return text.length <= max && /^[\x20-\x7e]*$/.test(text);
}
