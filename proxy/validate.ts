// Checks Services and EndpointSlices before the tracker takes them in. A
// malformed object is reported with every problem at once and skipped; the
// tracker keeps the last good version of it in force.
import { cidrFamily, ipFamily } from '../lib/net.ts';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';

const protocols = new Set(['TCP', 'UDP', 'SCTP']);
const serviceTypes = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);
const policies = new Set(['Cluster', 'Local']);
const addressTypes = new Set(['IPv4', 'IPv6', 'FQDN']);

/** The legacy annotation that carries LoadBalancer source ranges, comma-separated. */
export const sourceRangesAnnotation = 'service.beta.kubernetes.io/load-balancer-source-ranges';

/** Source ranges of a Service: spec.loadBalancerSourceRanges, else the legacy annotation. */
export function serviceSourceRanges(svc: V1Service): string[] {
  const spec = svc.spec?.loadBalancerSourceRanges;
  if (spec && spec.length > 0) return spec.map((r) => String(r).trim());
  const annotation = svc.metadata?.annotations?.[sourceRangesAnnotation];
  if (!annotation) return [];
  return annotation.split(',').map((r) => r.trim()).filter((r) => r !== '');
}

function isPort(value: unknown, allowZero = false): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value <= 65535 && (value >= 1 || (allowZero && value === 0));
}

function checkMeta(obj: { metadata?: { name?: string; namespace?: string } }, problems: string[]): void {
  if (!obj.metadata?.name) problems.push('metadata.name is missing');
  if (!obj.metadata?.namespace) problems.push('metadata.namespace is missing');
}

/** Every problem that stops kproxy from using this Service; empty when it is usable. */
export function validateService(svc: V1Service): string[] {
  const problems: string[] = [];
  checkMeta(svc, problems);
  const spec = svc.spec;
  if (!spec) {
    problems.push('spec is missing');
    return problems;
  }
  const type = spec.type ?? 'ClusterIP';
  if (!serviceTypes.has(type)) problems.push(`spec.type ${JSON.stringify(type)} is not ClusterIP, NodePort, LoadBalancer or ExternalName`);
  // ExternalName and headless Services are not proxied: only their identity matters.
  if (type === 'ExternalName' || spec.clusterIP === 'None') return problems;

  if (spec.clusterIP !== undefined && spec.clusterIP !== '' && ipFamily(spec.clusterIP) === 0) {
    problems.push(`spec.clusterIP ${JSON.stringify(spec.clusterIP)} is not an IP address`);
  }
  const clusterIPs = spec.clusterIPs ?? [];
  const seenFamilies = new Set<number>();
  clusterIPs.forEach((ip, i) => {
    const family = typeof ip === 'string' ? ipFamily(ip) : 0;
    if (family === 0) problems.push(`spec.clusterIPs[${i}] ${JSON.stringify(ip)} is not an IP address`);
    else if (seenFamilies.has(family)) problems.push(`spec.clusterIPs has more than one IPv${family} address`);
    seenFamilies.add(family);
  });
  if (spec.clusterIP && clusterIPs.length > 0 && clusterIPs[0] !== spec.clusterIP) {
    problems.push(`spec.clusterIP ${spec.clusterIP} differs from spec.clusterIPs[0] ${clusterIPs[0]}`);
  }

  const ports = spec.ports ?? [];
  if (ports.length === 0) problems.push('spec.ports is empty');
  const seenPorts = new Set<string>();
  ports.forEach((p, i) => {
    const where = `spec.ports[${i}]${p?.name ? ` (${p.name})` : ''}`;
    if (!p || typeof p !== 'object') {
      problems.push(`${where} is not an object`);
      return;
    }
    if (!isPort(p.port)) problems.push(`${where}.port ${JSON.stringify(p.port)} is not in 1-65535`);
    const protocol = p.protocol ?? 'TCP';
    if (!protocols.has(protocol)) problems.push(`${where}.protocol ${JSON.stringify(protocol)} is not TCP, UDP or SCTP`);
    if (p.nodePort !== undefined && p.nodePort !== null && !isPort(p.nodePort, true)) {
      problems.push(`${where}.nodePort ${JSON.stringify(p.nodePort)} is not in 1-65535`);
    }
    const id = `${p.name ?? ''}/${protocol}`;
    if (seenPorts.has(id)) problems.push(`${where}: port name ${JSON.stringify(p.name ?? '')} is used twice for ${protocol}`);
    seenPorts.add(id);
  });

  (spec.externalIPs ?? []).forEach((ip, i) => {
    if (typeof ip !== 'string' || ipFamily(ip) === 0) problems.push(`spec.externalIPs[${i}] ${JSON.stringify(ip)} is not an IP address`);
  });
  (svc.status?.loadBalancer?.ingress ?? []).forEach((ing, i) => {
    if (ing?.ip !== undefined && ing.ip !== '' && ipFamily(ing.ip) === 0) {
      problems.push(`status.loadBalancer.ingress[${i}].ip ${JSON.stringify(ing.ip)} is not an IP address`);
    }
  });
  for (const range of serviceSourceRanges(svc)) {
    if (cidrFamily(range) === 0) problems.push(`load balancer source range ${JSON.stringify(range)} is not a CIDR`);
  }

  const affinity = spec.sessionAffinity ?? 'None';
  if (affinity !== 'None' && affinity !== 'ClientIP') problems.push(`spec.sessionAffinity ${JSON.stringify(affinity)} is not None or ClientIP`);
  const timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
  if (timeout !== undefined && timeout !== null && !(Number.isInteger(timeout) && timeout >= 1 && timeout <= 86400)) {
    problems.push(`spec.sessionAffinityConfig.clientIP.timeoutSeconds ${JSON.stringify(timeout)} is not in 1-86400`);
  }
  if (spec.externalTrafficPolicy !== undefined && !policies.has(spec.externalTrafficPolicy)) {
    problems.push(`spec.externalTrafficPolicy ${JSON.stringify(spec.externalTrafficPolicy)} is not Cluster or Local`);
  }
  if (spec.internalTrafficPolicy !== undefined && !policies.has(spec.internalTrafficPolicy)) {
    problems.push(`spec.internalTrafficPolicy ${JSON.stringify(spec.internalTrafficPolicy)} is not Cluster or Local`);
  }
  if (spec.healthCheckNodePort !== undefined && spec.healthCheckNodePort !== null && !isPort(spec.healthCheckNodePort, true)) {
    problems.push(`spec.healthCheckNodePort ${JSON.stringify(spec.healthCheckNodePort)} is not in 1-65535`);
  }
  return problems;
}

/** Every problem that stops kproxy from using this EndpointSlice; empty when it is usable. */
export function validateEndpointSlice(slice: V1EndpointSlice): string[] {
  const problems: string[] = [];
  checkMeta(slice, problems);
  const addressType = slice.addressType;
  if (!addressTypes.has(addressType)) problems.push(`addressType ${JSON.stringify(addressType)} is not IPv4, IPv6 or FQDN`);
  // FQDN slices are never proxied; their content is not ours to judge.
  if (addressType === 'FQDN') return problems;
  const family = addressType === 'IPv6' ? 6 : 4;

  (slice.ports ?? []).forEach((p, i) => {
    const where = `ports[${i}]${p?.name ? ` (${p.name})` : ''}`;
    if (!p || typeof p !== 'object') {
      problems.push(`${where} is not an object`);
      return;
    }
    // A slice port without a number is legal (it means "all ports") and is
    // simply not proxied, as in kube-proxy.
    if (p.port !== undefined && p.port !== null && !isPort(p.port)) {
      problems.push(`${where}.port ${JSON.stringify(p.port)} is not in 1-65535`);
    }
    const protocol = p.protocol ?? 'TCP';
    if (!protocols.has(protocol)) problems.push(`${where}.protocol ${JSON.stringify(protocol)} is not TCP, UDP or SCTP`);
  });
  (slice.endpoints ?? []).forEach((ep, i) => {
    if (!ep || !Array.isArray(ep.addresses) || ep.addresses.length === 0) {
      problems.push(`endpoints[${i}].addresses is empty`);
      return;
    }
    ep.addresses.forEach((addr, j) => {
      const f = typeof addr === 'string' ? ipFamily(addr) : 0;
      if (f !== family) problems.push(`endpoints[${i}].addresses[${j}] ${JSON.stringify(addr)} is not an ${addressType} address`);
    });
    for (const cond of ['ready', 'serving', 'terminating'] as const) {
      const v = ep.conditions?.[cond];
      if (v !== undefined && v !== null && typeof v !== 'boolean') {
        problems.push(`endpoints[${i}].conditions.${cond} ${JSON.stringify(v)} is not a boolean`);
      }
    }
  });
  return problems;
}
