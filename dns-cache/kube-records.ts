// The records of a Service's names, per the Kubernetes DNS specification
// (kubernetes/dns docs/specification.md), in the shapes CoreDNS's
// kubernetes plugin answers with:
//   <svc>.<ns>.svc.<zone>                 A/AAAA: every ClusterIP, or every ready
//                                          endpoint address of a headless Service;
//                                          CNAME for ExternalName; SRV for every port
//   _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV per named port, target the Service
//                                          (ClusterIP) or each endpoint (headless),
//                                          with the targets' addresses as additional
//   <host>.<svc>.<ns>.svc.<zone>          A/AAAA of an endpoint; host is its
//                                          hostname, else its address with dashes
//   reverse name of each address          PTR to the Service, or to the endpoint's name
// A headless Service without ready endpoints, or a ClusterIP Service without
// an address, has no names at all (NXDOMAIN), as in CoreDNS. Pure functions
// of the compact objects (kube-objects.ts).
import { canonicalIP, ipFamily } from '../lib/net.ts';
import { parsePorts, serviceIPs, type DnsPort, type DnsService, type DnsSlice } from './kube-objects.ts';

export interface SrvRecord {
  readonly priority: number;
  readonly weight: number;
  readonly port: number;
  readonly target: string;
}

/** One name's records. A name with none of them exists without data (NODATA). */
export interface NameData {
  readonly a?: readonly string[];
  readonly aaaa?: readonly string[];
  readonly srv?: readonly SrvRecord[];
  /** Addresses of the SRV targets (the additional section). */
  readonly extra?: ReadonlyArray<{ readonly name: string; readonly ip: string }>;
  readonly cname?: string;
  readonly ptr?: readonly string[];
  readonly txt?: readonly string[];
}

/** The schema version dns-version.<zone> answers (CoreDNS's). */
export const DNS_SCHEMA_VERSION = '1.1.0';

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
const PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

/** A label this cache puts in a name: lowercase letters, digits, '-', '_'; 1-63 long. */
export function validLabel(s: string): boolean {
  return LABEL.test(s);
}

/** A host name (an ExternalName): labels of letters, digits and '-', at most 253 long. */
export function validHostName(s: string): boolean {
  const name = s.replace(/\.$/, '').toLowerCase();
  if (name.length === 0 || name.length > 253 || ipFamily(name) !== 0) return false;
  return name.split('.').every((l) => validLabel(l));
}

/** The endpoint part of a name when the endpoint has no hostname: its address with dashes. */
export function dashedIP(ip: string): string {
  return ip.replace(/[.:]/g, '-');
}

/** The reverse-lookup name of an address (in-addr.arpa or ip6.arpa), lowercase, no final dot. */
export function reverseName(ip: string): string | undefined {
  const family = ipFamily(ip);
  if (family === 4) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  if (family !== 6) return undefined;
  const [head, tail = ''] = ip.toLowerCase().split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  const hex = groups.map((g) => g.padStart(4, '0')).join('');
  return `${[...hex].reverse().join('.')}.ip6.arpa`;
}

/**
 * The address a reverse name stands for (canonical text), from its labels
 * before in-addr.arpa (4, decimal) or ip6.arpa (32 nibbles); else undefined.
 */
export function ipFromReverse(labels: readonly string[], v6: boolean): string | undefined {
  if (!v6) {
    if (labels.length !== 4 || !labels.every((l) => /^(0|[1-9]\d{0,2})$/.test(l) && Number(l) < 256)) return undefined;
    return [...labels].reverse().join('.');
  }
  if (labels.length !== 32 || !labels.every((l) => /^[0-9a-f]$/.test(l))) return undefined;
  const hex = [...labels].reverse().join('');
  return canonicalIP(hex.match(/.{4}/g)!.join(':'));
}

/** An address from the first label of a pod name ("10-0-0-1", "fd00--1"), or undefined. */
export function ipFromDashed(label: string): string | undefined {
  const dots = label.split('-');
  if (dots.length === 4 && !label.includes('--')) {
    const ip = dots.join('.');
    return ipFamily(ip) === 4 ? ip : undefined;
  }
  const ip = label.replace(/-/g, ':');
  return ipFamily(ip) === 6 ? canonicalIP(ip) : undefined;
}

export function isHeadless(svc: DnsService): boolean {
  return svc.headless === true;
}

export function isExternalName(svc: DnsService): boolean {
  return svc.externalName !== undefined;
}

/** A ready endpoint address and the label it is known by under its Service. */
export interface ReadyAddress {
  readonly ip: string;
  readonly host: string;
  /** Its slice's ports; one of port -1 when the slice has none. */
  readonly ports: readonly DnsPort[];
}

const NO_PORTS: readonly DnsPort[] = [{}];

/**
 * Every ready address of a Service's EndpointSlices (all of them when the
 * Service publishes not-ready addresses), with its endpoint label.
 */
export function readyAddresses(svc: DnsService, slices: Iterable<DnsSlice>): ReadyAddress[] {
  const out: ReadyAddress[] = [];
  for (const s of slices) {
    if (s.endpoints === undefined) continue;
    const parsed = parsePorts(s.ports);
    const ports = parsed.length ? parsed : NO_PORTS;
    for (const entry of s.endpoints.split(' ')) {
      const notReady = entry.startsWith('-');
      if (notReady && !svc.publishNotReady) continue;
      const slash = entry.indexOf('/');
      const ip = entry.slice(notReady ? 1 : 0, slash < 0 ? undefined : slash);
      out.push({ ip, host: slash < 0 ? dashedIP(ip) : entry.slice(slash + 1), ports });
    }
  }
  return out;
}

/** The label of a port for SRV names: its lowercase name, when it and its protocol are valid. */
function portLabels(p: DnsPort): { name: string; proto: string } | undefined {
  const name = p.name ?? '';
  const proto = p.protocol ?? 'tcp';
  if (name === '' || !validLabel(name) || !PROTOCOLS.has(proto)) return undefined;
  return { name, proto };
}

/**
 * SRV records as CoreDNS builds them: every (target, address, port) entry
 * counts for the weight (100 split evenly, at least 1); one record per
 * distinct (target, port), ports of -1 (an endpoint set without ports) left out.
 */
function srvData(entries: ReadonlyArray<{ target: string; ip: string; port: number }>): NameData | undefined {
  if (entries.length === 0) return undefined;
  const weight = Math.max(1, Math.floor(100 / entries.length));
  const srv: SrvRecord[] = [];
  const extra = new Map<string, { name: string; ip: string }>();
  const seen = new Set<string>();
  for (const e of entries) {
    if (e.port < 0) continue;
    const k = `${e.target} ${e.port}`;
    if (!seen.has(k)) {
      seen.add(k);
      srv.push({ priority: 0, weight, port: e.port, target: e.target });
    }
    extra.set(`${e.target} ${e.ip}`, { name: e.target, ip: e.ip });
  }
  return srv.length ? { srv, extra: [...extra.values()] } : undefined;
}

function split(ips: Iterable<string>): { a?: string[]; aaaa?: string[] } {
  const a: string[] = [];
  const aaaa: string[] = [];
  for (const ip of new Set(ips)) (ip.includes(':') ? aaaa : a).push(ip);
  return { ...(a.length ? { a } : {}), ...(aaaa.length ? { aaaa } : {}) };
}

/**
 * The records of <svc>.<ns>.svc.<zone> (`base`), or undefined when the
 * Service has no names: A/AAAA, SRV of every port, or an ExternalName's CNAME.
 */
export function serviceData(base: string, svc: DnsService, ready: readonly ReadyAddress[]): NameData | undefined {
  if (isExternalName(svc)) {
    const target = svc.externalName ?? '';
    return validHostName(target) ? { cname: target.replace(/\.$/, '') } : undefined;
  }
  if (!isHeadless(svc)) {
    const ips = serviceIPs(svc);
    if (ips.length === 0) return undefined;
    const ports = parsePorts(svc.ports);
    const srv = srvData(ports.flatMap((p) => ips.map((ip) => ({ target: base, ip, port: p.port ?? -1 }))));
    return { ...split(ips), ...srv };
  }
  if (ready.length === 0) return undefined;
  const srv = srvData(ready.flatMap((r) => r.ports.map((p) => ({ target: `${r.host}.${base}`, ip: r.ip, port: p.port ?? -1 }))));
  return { ...split(ready.map((r) => r.ip)), ...srv };
}

/** The SRV records of _<port>._<proto>.<base>, or undefined when no such named port exists. */
export function namedPortData(base: string, svc: DnsService, ready: readonly ReadyAddress[], port: string, proto: string): NameData | undefined {
  const matches = (p: DnsPort): boolean => {
    const l = portLabels(p);
    return l !== undefined && l.name === port && l.proto === proto && p.port !== undefined;
  };
  if (isExternalName(svc)) return undefined;
  if (!isHeadless(svc)) {
    const ips = serviceIPs(svc);
    return srvData(parsePorts(svc.ports).filter(matches).flatMap((p) => ips.map((ip) => ({ target: base, ip, port: p.port as number }))));
  }
  return srvData(ready.flatMap((r) => r.ports.filter(matches).map((p) => ({ target: `${r.host}.${base}`, ip: r.ip, port: p.port as number }))));
}

/** Whether _<proto>.<base> exists: some named port of that protocol has an SRV name. */
export function protocolExists(svc: DnsService, ready: readonly ReadyAddress[], proto: string): boolean {
  if (isExternalName(svc)) return false;
  const has = (ports: readonly DnsPort[]): boolean => ports.some((p) => portLabels(p)?.proto === proto && p.port !== undefined);
  if (!isHeadless(svc)) return svc.ips !== undefined && has(parsePorts(svc.ports));
  return ready.some((r) => has(r.ports));
}

/** A headless Service's endpoint names: host -> its addresses. */
export function endpointHosts(ready: readonly ReadyAddress[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const r of ready) {
    const list = out.get(r.host);
    if (list === undefined) out.set(r.host, [r.ip]);
    else if (!list.includes(r.ip)) list.push(r.ip);
  }
  return out;
}

/** The records of an endpoint name from its addresses. */
export function addressData(ips: readonly string[]): NameData {
  return split(ips);
}
