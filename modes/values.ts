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
  const ofFamily = (ip: string): boolean => ipFamily(ip) === s.family;
  if (!ofFamily(s.clusterIP)) return `cluster IP ${JSON.stringify(s.clusterIP)} is not an IPv${s.family} address`;
  if (!isPort(s.port)) return `port ${s.port} is out of range`;
  if (!isPort(s.nodePort, true)) return `nodePort ${s.nodePort} is out of range`;
  if (!isPort(s.healthCheckNodePort, true)) return `healthCheckNodePort ${s.healthCheckNodePort} is out of range`;
  if (!Number.isInteger(s.affinityTimeoutSeconds) || s.affinityTimeoutSeconds < 0) return `affinity timeout ${s.affinityTimeoutSeconds} is not a whole number of seconds`;
  for (const ip of [...s.externalIPs, ...s.loadBalancerIPs]) if (!ofFamily(ip)) return `address ${JSON.stringify(ip)} is not an IPv${s.family} address`;
  for (const c of [...s.loadBalancerSourceRanges, ...s.firewallSources]) if (cidrFamily(c) !== s.family) return `source range ${JSON.stringify(c)} is not an IPv${s.family} CIDR`;
  for (const e of s.allReachableEndpoints) {
    if (!ofFamily(e.ip)) return `endpoint address ${JSON.stringify(e.ip)} is not an IPv${s.family} address`;
    if (!isPort(e.port)) return `endpoint port ${e.port} is out of range`;
  }
  return undefined;
}

/** Printable ASCII of a sane length: text a rule comment may carry as it is. */
export function isPrintable(text: string, max = 200): boolean {
  return text.length <= max && /^[\x20-\x7e]*$/.test(text);
}
