// Checks Services and EndpointSlices before the tracker takes them in. A
// malformed object is reported with every problem at once and skipped; the
// tracker keeps the last good version of it in force.
//
// Every string of an object that can reach a rule, a log line or a DNS
// answer (names, namespaces, port names, label values, enums) is checked
// here against the rules the API server applies, whatever the source: a
// YAML file is a trust boundary too. Names are data, never syntax.
import { cidrFamily, ipFamily } from '../lib/net.ts';

/** The label tying an EndpointSlice to its Service. */
export const serviceNameLabel = 'kubernetes.io/service-name';
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

// The API server's name rules (k8s.io/apimachinery/pkg/util/validation).
const dns1123Label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dns1035Label = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const dns1123Subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const labelValue = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const ianaServiceName = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** A short, printable rendering of a value for a problem message (never the raw text of a hostile name). */
export function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function check(problems: string[], where: string, value: unknown, ok: boolean, rule: string): void {
  if (!ok) problems.push(`${where} ${shown(value)} is not ${rule}`);
}

export function isDns1123Label(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 63 && dns1123Label.test(v);
}

export function isDns1035Label(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 63 && dns1035Label.test(v);
}

export function isDns1123Subdomain(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 253 && dns1123Subdomain.test(v);
}

export function isLabelValue(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 63 && labelValue.test(v);
}

/** IANA_SVC_NAME: at most 15 characters, lowercase letters, digits and inner hyphens (no "--"), at least one letter. */
export function isIanaServiceName(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 15 && ianaServiceName.test(v) && !v.includes('--') && /[a-z]/.test(v);
}

function checkMeta(obj: { metadata?: { name?: string; namespace?: string } }, problems: string[], name: (v: unknown) => boolean, rule: string): void {
  const m = obj.metadata;
  if (!m?.name) problems.push('metadata.name is missing');
  else check(problems, 'metadata.name', m.name, name(m.name), rule);
  if (!m?.namespace) problems.push('metadata.namespace is missing');
  else check(problems, 'metadata.namespace', m.namespace, isDns1123Label(m.namespace), 'a DNS-1123 label (lowercase letters, digits, "-"; at most 63)');
}

/** Every problem that stops kproxy from using this Service; empty when it is usable. */
export function validateService(svc: V1Service): string[] {
  const problems: string[] = [];
  checkMeta(svc, problems, isDns1035Label, 'a DNS-1035 label (a lowercase letter, then lowercase letters, digits, "-"; at most 63)');
  const spec = svc.spec;
  if (!spec) {
    problems.push('spec is missing');
    return problems;
  }
  const type = spec.type ?? 'ClusterIP';
  if (!serviceTypes.has(type)) problems.push(`spec.type ${shown(type)} is not ClusterIP, NodePort, LoadBalancer or ExternalName`);
  for (const [k, v] of Object.entries(svc.metadata?.labels ?? {})) {
    if (!isLabelValue(v)) problems.push(`metadata.labels[${shown(k)}] value ${shown(v)} is not a label value`);
  }
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
    // The name goes into the message only when it is a valid one.
    const where = `spec.ports[${i}]${isDns1123Label(p?.name) ? ` (${p.name})` : ''}`;
    if (!p || typeof p !== 'object') {
      problems.push(`${where} is not an object`);
      return;
    }
    if (p.name !== undefined && p.name !== null && p.name !== '') {
      check(problems, `${where}.name`, p.name, isDns1123Label(p.name), 'a DNS-1123 label (lowercase letters, digits, "-"; at most 63)');
    }
    const tp = p.targetPort as unknown;
    if (tp !== undefined && tp !== null && !(typeof tp === 'number' ? isPort(tp) : isIanaServiceName(tp) || (typeof tp === 'string' && /^\d+$/.test(tp) && isPort(Number(tp))))) {
      problems.push(`${where}.targetPort ${shown(tp)} is not a port number or an IANA service name`);
    }
    if (!isPort(p.port)) problems.push(`${where}.port ${JSON.stringify(p.port)} is not in 1-65535`);
    const protocol = p.protocol ?? 'TCP';
    if (!protocols.has(protocol)) problems.push(`${where}.protocol ${shown(protocol)} is not TCP, UDP or SCTP`);
    if (p.nodePort !== undefined && p.nodePort !== null && !isPort(p.nodePort, true)) {
      problems.push(`${where}.nodePort ${JSON.stringify(p.nodePort)} is not in 1-65535`);
    }
    const id = `${p.name ?? ''}/${protocol}`;
    if (seenPorts.has(id)) problems.push(`${where}: port name ${shown(p.name ?? '')} is used twice for ${protocol}`);
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
  checkMeta(slice, problems, isDns1123Subdomain, 'a DNS-1123 subdomain (lowercase letters, digits, "-", "."; at most 253)');
  const owner = slice.metadata?.labels?.[serviceNameLabel];
  if (owner !== undefined && !isDns1035Label(owner)) problems.push(`label ${serviceNameLabel} ${shown(owner)} is not a Service name (a DNS-1035 label)`);
  const addressType = slice.addressType;
  if (!addressTypes.has(addressType)) problems.push(`addressType ${JSON.stringify(addressType)} is not IPv4, IPv6 or FQDN`);
  // FQDN slices are never proxied; their content is not ours to judge.
  if (addressType === 'FQDN') return problems;
  const family = addressType === 'IPv6' ? 6 : 4;

  (slice.ports ?? []).forEach((p, i) => {
    const where = `ports[${i}]${isDns1123Label(p?.name) ? ` (${p.name})` : ''}`;
    if (!p || typeof p !== 'object') {
      problems.push(`${where} is not an object`);
      return;
    }
    if (p.name !== undefined && p.name !== null && p.name !== '') {
      check(problems, `${where}.name`, p.name, isDns1123Label(p.name), 'a DNS-1123 label (lowercase letters, digits, "-"; at most 63)');
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
    if (ep.nodeName !== undefined && ep.nodeName !== null) check(problems, `endpoints[${i}].nodeName`, ep.nodeName, isDns1123Subdomain(ep.nodeName), 'a node name (a DNS-1123 subdomain)');
    if (ep.hostname !== undefined && ep.hostname !== null) check(problems, `endpoints[${i}].hostname`, ep.hostname, isDns1123Label(ep.hostname), 'a DNS-1123 label');
    if (ep.zone !== undefined && ep.zone !== null) check(problems, `endpoints[${i}].zone`, ep.zone, isLabelValue(ep.zone), 'a zone name (a label value)');
    for (const h of ep.hints?.forZones ?? []) check(problems, `endpoints[${i}].hints.forZones`, h?.name, isLabelValue(h?.name), 'a zone name (a label value)');
    for (const h of ep.hints?.forNodes ?? []) check(problems, `endpoints[${i}].hints.forNodes`, h?.name, isDns1123Subdomain(h?.name), 'a node name (a DNS-1123 subdomain)');
    for (const cond of ['ready', 'serving', 'terminating'] as const) {
      const v = ep.conditions?.[cond];
      if (v !== undefined && v !== null && typeof v !== 'boolean') {
        problems.push(`endpoints[${i}].conditions.${cond} ${JSON.stringify(v)} is not a boolean`);
      }
    }
  });
  return problems;
}
