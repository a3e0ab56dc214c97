// What DNS keeps of the watched objects. The informers' caches hold these
// trimmed copies, not the API server's objects: a Service or EndpointSlice
// shrinks to the few fields the records are built from, which keeps a
// 10,000-Service cluster's watch small. Nothing here trusts the input: a
// field of the wrong type is dropped, never followed.
import type { KubernetesObject } from '@kubernetes/client-node';

export interface Meta {
  readonly name?: string;
  readonly namespace?: string;
  readonly resourceVersion?: string;
}

export interface DnsServicePort {
  readonly name?: string;
  readonly protocol?: string;
  readonly port?: number;
}

export interface DnsService extends KubernetesObject {
  readonly metadata?: Meta;
  readonly spec?: {
    readonly type?: string;
    readonly clusterIP?: string;
    readonly clusterIPs?: readonly string[];
    readonly ports?: readonly DnsServicePort[];
    readonly externalName?: string;
    readonly publishNotReadyAddresses?: boolean;
  };
}

export interface DnsEndpoint {
  readonly addresses?: readonly string[];
  readonly conditions?: { readonly ready?: boolean };
  readonly hostname?: string;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface DnsSlice extends KubernetesObject {
  readonly metadata?: Meta & { readonly labels?: Readonly<Record<string, string>> };
  readonly addressType?: string;
  readonly endpoints?: readonly DnsEndpoint[];
  readonly ports?: readonly DnsServicePort[];
}

export interface DnsNamespace extends KubernetesObject {
  readonly metadata?: Meta;
}

type Loose = Record<string, unknown>;

function obj(v: unknown): Loose | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Loose : undefined;
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
function strings(v: unknown): string[] | undefined {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : undefined;
}

function meta(o: Loose): Meta {
  const m = obj(o.metadata) ?? {};
  return { name: str(m.name), namespace: str(m.namespace), resourceVersion: str(m.resourceVersion) };
}

function ports(v: unknown): DnsServicePort[] | undefined {
  if (!Array.isArray(v)) return undefined;
  return v.map((p) => {
    const o = obj(p) ?? {};
    return { name: str(o.name), protocol: str(o.protocol), port: typeof o.port === 'number' ? o.port : undefined };
  });
}

export function trimService(input: KubernetesObject): DnsService {
  const o = input as unknown as Loose;
  const spec = obj(o.spec) ?? {};
  return {
    metadata: meta(o),
    spec: {
      type: str(spec.type),
      clusterIP: str(spec.clusterIP),
      clusterIPs: strings(spec.clusterIPs),
      ports: ports(spec.ports),
      externalName: str(spec.externalName),
      publishNotReadyAddresses: spec.publishNotReadyAddresses === true,
    },
  };
}

export function trimSlice(input: KubernetesObject): DnsSlice {
  const o = input as unknown as Loose;
  const m = obj(o.metadata) ?? {};
  const service = str(obj(m.labels)?.[SERVICE_NAME_LABEL]);
  const endpoints = Array.isArray(o.endpoints)
    ? o.endpoints.map((e): DnsEndpoint => {
      const x = obj(e) ?? {};
      const ready = obj(x.conditions)?.ready;
      return {
        addresses: strings(x.addresses),
        conditions: { ready: typeof ready === 'boolean' ? ready : undefined },
        hostname: str(x.hostname),
      };
    })
    : undefined;
  return {
    metadata: { ...meta(o), labels: service === undefined ? {} : { [SERVICE_NAME_LABEL]: service } },
    addressType: str(o.addressType),
    endpoints,
    ports: ports(o.ports),
  };
}

export function trimNamespace(input: KubernetesObject): DnsNamespace {
  return { metadata: meta(input as unknown as Loose) };
}

/** "namespace/name" of an object. */
export function objectKey(o: { readonly metadata?: Meta }): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}
