// What DNS keeps of the watched objects. The informers' caches hold these
// compact copies, not the API server's objects: a Service keeps one string
// of addresses and one of ports, an EndpointSlice one string for all its
// endpoints and one for its ports, namespaces are shared strings; so a
// 10,000-Service cluster's watch costs a few megabytes. Nothing here trusts
// the input: a field of the wrong type is dropped, never followed.
import type { KubernetesObject } from '@kubernetes/client-node';
import { canonicalIP, ipFamily } from '../lib/net.ts';

/** What the informer needs to keep of an object's metadata. */
export interface Meta {
  readonly name?: string;
  readonly namespace?: string;
  readonly resourceVersion?: string;
}

export interface DnsPort {
  readonly name?: string;
  readonly protocol?: string;
  readonly port?: number;
}

export interface DnsService extends KubernetesObject {
  readonly metadata?: Meta;
  /** Its ClusterIPs (canonical text), space-separated; none when headless or not allocated. */
  readonly ips?: string;
  readonly headless?: boolean;
  /** Set for type ExternalName only. */
  readonly externalName?: string;
  /** Its ports, space-separated "name/protocol/port" (see parsePorts). */
  readonly ports?: string;
  readonly publishNotReady?: boolean;
}

export interface DnsSlice extends KubernetesObject {
  readonly metadata?: Meta;
  /** The kubernetes.io/service-name label. */
  readonly service?: string;
  /**
   * Its IPv4 or IPv6 endpoints (FQDN slices keep none), space-separated:
   * "ip" or "ip/hostname", with "-" in front when not ready.
   */
  readonly endpoints?: string;
  /** Its ports, as a Service's. */
  readonly ports?: string;
}

export interface DnsNamespace extends KubernetesObject {
  readonly metadata?: Meta;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

type Loose = Record<string, unknown>;

function obj(v: unknown): Loose | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Loose : undefined;
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** One string per value, however many objects carry it (namespaces, port lists: few distinct ones). */
class Pool {
  private readonly strings = new Map<string, string>();
  get(v: string | undefined): string | undefined {
    if (v === undefined) return undefined;
    let s = this.strings.get(v);
    if (s === undefined) {
      // A bound, should some cluster have very many distinct values.
      if (this.strings.size >= 10_000) this.strings.clear();
      this.strings.set(v, s = v);
    }
    return s;
  }
}
const namespaceNames = new Pool();
const portLists = new Pool();

function shared(ns: string | undefined): string | undefined {
  return namespaceNames.get(ns);
}

function meta(o: Loose): Meta {
  const m = obj(o.metadata) ?? {};
  return { name: str(m.name), namespace: shared(str(m.namespace)), resourceVersion: str(m.resourceVersion) };
}

const PORT_NAME = /^[a-z0-9_-]{1,63}$/;

/** "name/protocol/port" entries: name and protocol lowercase (either may be empty), port 1-65535 or empty. */
function ports(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length === 0) return undefined;
  return portLists.get(v.map((p) => {
    const o = obj(p) ?? {};
    const name = typeof o.name === 'string' && PORT_NAME.test(o.name.toLowerCase()) ? o.name.toLowerCase() : '';
    const protocol = typeof o.protocol === 'string' && /^[a-z]{1,10}$/i.test(o.protocol) ? o.protocol.toLowerCase() : '';
    const port = typeof o.port === 'number' && Number.isInteger(o.port) && o.port > 0 && o.port < 65536 ? String(o.port) : '';
    return `${name}/${protocol}/${port}`;
  }).join(' '));
}

/** The ports of a compact Service or EndpointSlice. */
export function parsePorts(s: string | undefined): DnsPort[] {
  if (s === undefined) return [];
  return s.split(' ').map((e) => {
    const [name, protocol, port] = e.split('/');
    const out: { name?: string; protocol?: string; port?: number } = {};
    if (name) out.name = name;
    if (protocol) out.protocol = protocol;
    if (port) out.port = Number(port);
    return out;
  });
}

/** The ClusterIPs of a compact Service. */
export function serviceIPs(svc: DnsService): string[] {
  return svc.ips === undefined ? [] : svc.ips.split(' ');
}

/** An address in canonical text, or undefined. */
function address(v: unknown): string | undefined {
  return typeof v === 'string' && ipFamily(v) !== 0 ? canonicalIP(v) : undefined;
}

const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function trimService(input: KubernetesObject): DnsService {
  const o = input as unknown as Loose;
  const spec = obj(o.spec) ?? {};
  const external = spec.type === 'ExternalName';
  const raw = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length ? spec.clusterIPs : [spec.clusterIP];
  const headless = !external && raw[0] === 'None';
  const ips = external || headless ? [] : [...new Set(raw.map(address).filter((x): x is string => x !== undefined))];
  // Every field in one literal: one object of one shape, no overflow storage.
  return {
    metadata: meta(o),
    ips: ips.length ? ips.join(' ') : undefined,
    headless: headless || undefined,
    externalName: external ? str(spec.externalName) : undefined,
    ports: external ? undefined : ports(spec.ports),
    publishNotReady: spec.publishNotReadyAddresses === true || undefined,
  };
}

export function trimSlice(input: KubernetesObject): DnsSlice {
  const o = input as unknown as Loose;
  const m = obj(o.metadata) ?? {};
  let endpoints: string | undefined;
  if ((o.addressType === 'IPv4' || o.addressType === 'IPv6') && Array.isArray(o.endpoints)) {
    const entries: string[] = [];
    for (const e of o.endpoints) {
      const x = obj(e) ?? {};
      const ready = obj(x.conditions)?.ready;
      const hostname = str(x.hostname)?.toLowerCase();
      const host = hostname !== undefined && HOSTNAME.test(hostname) ? `/${hostname}` : '';
      // Ready unknown counts as ready (EndpointSlice API).
      const mark = ready === false ? '-' : '';
      for (const a of Array.isArray(x.addresses) ? x.addresses : []) {
        const ip = address(a);
        if (ip !== undefined) entries.push(`${mark}${ip}${host}`);
      }
    }
    if (entries.length) endpoints = entries.join(' ');
  }
  return { metadata: meta(o), service: str(obj(m.labels)?.[SERVICE_NAME_LABEL]), endpoints, ports: ports(o.ports) };
}

export function trimNamespace(input: KubernetesObject): DnsNamespace {
  return { metadata: meta(input as unknown as Loose) };
}

/** "namespace/name" of an object. */
export function objectKey(o: { readonly metadata?: Meta }): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}
