// The DNS names a Service gives, per the Kubernetes DNS specification
// (kubernetes/dns docs/specification.md) in the shapes CoreDNS's kubernetes
// plugin answers with:
//   <svc>.<ns>.svc.<zone>                 A/AAAA: every ClusterIP, or every ready
//                                          endpoint address of a headless Service;
//                                          CNAME for ExternalName; SRV for every port
//   _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV per named port, target the Service
//                                          (ClusterIP) or each endpoint (headless),
//                                          with the targets' addresses as additional
//   <host>.<svc>.<ns>.svc.<zone>          A/AAAA of a headless Service's endpoint;
//                                          host is its hostname, else its address
//                                          with dashes
//   reverse name of each address          PTR to the Service, or to the endpoint's name
// A headless Service without ready endpoints, or a ClusterIP Service without
// an address, has no names at all (NXDOMAIN), as in CoreDNS. Pure functions:
// objects in, names and records out; every label from an object is checked
// and a bad one leaves its name out.
import { ipFamily } from '../lib/net.ts';
import type { DnsService, DnsSlice } from './kube-objects.ts';

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

export interface ServiceNames {
  /** Lowercased names without the final dot -> records. */
  readonly names: Map<string, NameData>;
  /** Address -> the names its PTR points to. */
  readonly ptrs: ReadonlyArray<{ readonly ip: string; readonly target: string }>;
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

/** An address from the first label of a pod name ("10-0-0-1", "fd00--1"), or undefined. */
export function ipFromDashed(label: string): string | undefined {
  const dots = label.split('-');
  if (dots.length === 4 && !label.includes('--')) {
    const ip = dots.join('.');
    return ipFamily(ip) === 4 ? ip : undefined;
  }
  const ip = label.replace(/-/g, ':');
  return ipFamily(ip) === 6 ? ip : undefined;
}

interface Building {
  a: Set<string>;
  aaaa: Set<string>;
  srv: SrvRecord[];
  extra: Map<string, { name: string; ip: string }>;
}

function building(names: Map<string, Building>, name: string): Building {
  let b = names.get(name);
  if (b === undefined) {
    b = { a: new Set(), aaaa: new Set(), srv: [], extra: new Map() };
    names.set(name, b);
  }
  return b;
}

function addAddress(b: Building, ip: string): void {
  if (ipFamily(ip) === 4) b.a.add(ip);
  else if (ipFamily(ip) === 6) b.aaaa.add(ip);
}

/**
 * SRV records as CoreDNS builds them: every (target, address, port) entry
 * counts for the weight (100 split evenly, at least 1); one record per
 * distinct (target, port), ports of -1 (an endpoint set without ports) left out.
 */
function addSrv(b: Building, entries: ReadonlyArray<{ target: string; ip: string; port: number }>): void {
  if (entries.length === 0) return;
  const weight = Math.max(1, Math.floor(100 / entries.length));
  const seen = new Set<string>();
  for (const e of entries) {
    if (e.port < 0) continue;
    const k = `${e.target} ${e.port}`;
    if (!seen.has(k)) {
      seen.add(k);
      b.srv.push({ priority: 0, weight, port: e.port, target: e.target });
    }
    b.extra.set(`${e.target} ${e.ip}`, { name: e.target, ip: e.ip });
  }
}

function finish(names: Map<string, Building>): Map<string, NameData> {
  const out = new Map<string, NameData>();
  for (const [name, b] of names) {
    const d: { a?: string[]; aaaa?: string[]; srv?: SrvRecord[]; extra?: Array<{ name: string; ip: string }> } = {};
    if (b.a.size) d.a = [...b.a];
    if (b.aaaa.size) d.aaaa = [...b.aaaa];
    if (b.srv.length) {
      d.srv = b.srv;
      d.extra = [...b.extra.values()];
    }
    out.set(name, d);
  }
  return out;
}

/** A Service port as a name's labels: lowercase name and protocol, when both are valid. */
function portLabels(p: { name?: string; protocol?: string }): { name: string; proto: string } | undefined {
  const name = (p.name ?? '').toLowerCase();
  const proto = (p.protocol ?? 'TCP').toLowerCase();
  if (name === '' || !validLabel(name) || !PROTOCOLS.has(proto)) return undefined;
  return { name, proto };
}

export function isHeadless(svc: DnsService): boolean {
  return svc.spec?.clusterIP === 'None';
}

export function isExternalName(svc: DnsService): boolean {
  return svc.spec?.type === 'ExternalName';
}

/** The ClusterIPs of a Service that are addresses (not "None", not empty). */
export function clusterIPs(svc: DnsService): string[] {
  const ips = svc.spec?.clusterIPs?.length ? svc.spec.clusterIPs : [svc.spec?.clusterIP ?? ''];
  return [...new Set(ips.filter((ip) => ipFamily(ip) !== 0))];
}

/** A ready endpoint address and the label it is known by under its Service. */
export interface ReadyAddress {
  readonly ip: string;
  readonly host: string;
  /** The slice's ports: [name, protocol, port]; one of port -1 when the slice has none. */
  readonly ports: ReadonlyArray<{ readonly name: string; readonly protocol: string; readonly port: number }>;
}

/**
 * Every ready address of a Service's EndpointSlices (all of them when the
 * Service publishes not-ready addresses), with its endpoint label.
 */
export function readyAddresses(svc: DnsService, slices: Iterable<DnsSlice>): ReadyAddress[] {
  const out: ReadyAddress[] = [];
  const publishAll = svc.spec?.publishNotReadyAddresses === true;
  for (const s of slices) {
    if (s.addressType !== 'IPv4' && s.addressType !== 'IPv6') continue;
    const ports = s.ports?.length
      ? s.ports.map((p) => ({ name: (p.name ?? '').toLowerCase(), protocol: (p.protocol ?? 'TCP').toLowerCase(), port: p.port ?? -1 }))
      : [{ name: '', protocol: '', port: -1 }];
    for (const e of s.endpoints ?? []) {
      // Ready unknown counts as ready (EndpointSlice API).
      if (e.conditions?.ready === false && !publishAll) continue;
      const hostname = e.hostname?.toLowerCase();
      for (const ip of e.addresses ?? []) {
        if (ipFamily(ip) === 0) continue;
        const host = hostname !== undefined && validLabel(hostname) ? hostname : dashedIP(ip);
        out.push({ ip, host, ports });
      }
    }
  }
  return out;
}

/**
 * The names and PTRs of one Service in `zone` ("cluster.local"), from the
 * Service and its EndpointSlices. Empty when the Service's own labels are
 * not valid DNS labels.
 */
export function serviceNames(zone: string, svc: DnsService, slices: Iterable<DnsSlice>): ServiceNames {
  const names = new Map<string, Building>();
  const ptrs: Array<{ ip: string; target: string }> = [];
  const ns = (svc.metadata?.namespace ?? '').toLowerCase();
  const name = (svc.metadata?.name ?? '').toLowerCase();
  if (!validLabel(ns) || !validLabel(name)) return { names: new Map(), ptrs };
  const base = `${name}.${ns}.svc.${zone}`;

  if (isExternalName(svc)) {
    const target = svc.spec?.externalName ?? '';
    const out = new Map<string, NameData>();
    if (validHostName(target)) out.set(base, { cname: target.replace(/\.$/, '') });
    return { names: out, ptrs };
  }

  const ports = svc.spec?.ports ?? [];
  if (!isHeadless(svc)) {
    const ips = clusterIPs(svc);
    if (ips.length === 0) return { names: new Map(), ptrs };
    const b = building(names, base);
    for (const ip of ips) {
      addAddress(b, ip);
      ptrs.push({ ip, target: base });
    }
    // SRV on the Service name itself: every port (CoreDNS).
    addSrv(b, ports.flatMap((p) => ips.map((ip) => ({ target: base, ip, port: p.port ?? -1 }))));
    for (const p of ports) {
      const l = portLabels(p);
      if (!l || typeof p.port !== 'number') continue;
      const srvName = `_${l.name}._${l.proto}.${base}`;
      addSrv(building(names, srvName), ips.map((ip) => ({ target: base, ip, port: p.port as number })));
      building(names, `_${l.proto}.${base}`);
    }
    return { names: finish(names), ptrs };
  }

  const ready = readyAddresses(svc, slices);
  if (ready.length === 0) return { names: new Map(), ptrs };
  const b = building(names, base);
  for (const r of ready) {
    addAddress(b, r.ip);
    const epName = `${r.host}.${base}`;
    addAddress(building(names, epName), r.ip);
    ptrs.push({ ip: r.ip, target: epName });
  }
  addSrv(b, ready.flatMap((r) => r.ports.map((p) => ({ target: `${r.host}.${base}`, ip: r.ip, port: p.port }))));
  const named = new Map<string, Array<{ target: string; ip: string; port: number }>>();
  for (const r of ready) {
    for (const p of r.ports) {
      const l = portLabels({ name: p.name, protocol: p.protocol });
      if (!l || p.port < 0) continue;
      const key = `_${l.name}._${l.proto}.${base}`;
      let list = named.get(key);
      if (list === undefined) named.set(key, list = []);
      list.push({ target: `${r.host}.${base}`, ip: r.ip, port: p.port });
      building(names, `_${l.proto}.${base}`);
    }
  }
  for (const [srvName, entries] of named) addSrv(building(names, srvName), entries);
  return { names: finish(names), ptrs };
}
