// Services, EndpointSlices and Namespaces as the API server serialises
// them, for the DNS cache's watcher tests and benchmark.
import type { KubeObject } from './apiserver.ts';

export interface PortSpec {
  readonly name?: string;
  readonly port: number;
  readonly protocol?: string;
}

export function namespace(name: string): KubeObject {
  return { kind: 'Namespace', apiVersion: 'v1', metadata: { name, labels: { 'kubernetes.io/metadata.name': name } }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
}

export function clusterIPService(ns: string, name: string, ips: readonly string[], ports: readonly PortSpec[]): KubeObject {
  return {
    kind: 'Service', apiVersion: 'v1',
    metadata: { namespace: ns, name, uid: `uid-${ns}-${name}`, labels: { app: name }, annotations: { 'example.com/owner': 'team' } },
    spec: {
      type: 'ClusterIP', clusterIP: ips[0], clusterIPs: ips,
      ipFamilies: ips.map((ip) => (ip.includes(':') ? 'IPv6' : 'IPv4')), ipFamilyPolicy: ips.length > 1 ? 'RequireDualStack' : 'SingleStack',
      selector: { app: name }, sessionAffinity: 'None', internalTrafficPolicy: 'Cluster',
      ports: ports.map((p) => ({ ...p, protocol: p.protocol ?? 'TCP', targetPort: p.port })),
    },
    status: { loadBalancer: {} },
  };
}

export function headlessService(ns: string, name: string, ports: readonly PortSpec[], publishNotReadyAddresses = false): KubeObject {
  return {
    kind: 'Service', apiVersion: 'v1',
    metadata: { namespace: ns, name, uid: `uid-${ns}-${name}` },
    spec: {
      type: 'ClusterIP', clusterIP: 'None', clusterIPs: ['None'], selector: { app: name }, publishNotReadyAddresses,
      ports: ports.map((p) => ({ ...p, protocol: p.protocol ?? 'TCP', targetPort: p.port })),
    },
  };
}

export function externalNameService(ns: string, name: string, target: string): KubeObject {
  return {
    kind: 'Service', apiVersion: 'v1',
    metadata: { namespace: ns, name, uid: `uid-${ns}-${name}` },
    spec: { type: 'ExternalName', externalName: target },
  };
}

export interface EndpointSpec {
  readonly ip: string;
  readonly ready?: boolean;
  readonly hostname?: string;
}

export function endpointSlice(ns: string, service: string, suffix: string, endpoints: readonly EndpointSpec[], ports: readonly PortSpec[]): KubeObject {
  const v6 = endpoints.some((e) => e.ip.includes(':'));
  return {
    kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1',
    metadata: {
      namespace: ns, name: `${service}-${suffix}`, uid: `uid-${ns}-${service}-${suffix}`,
      labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
    },
    addressType: v6 ? 'IPv6' : 'IPv4',
    endpoints: endpoints.map((e, i) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
      ...(e.hostname ? { hostname: e.hostname } : {}),
      nodeName: `node-${i % 3}`, zone: 'zone-a',
      targetRef: { kind: 'Pod', namespace: ns, name: `${service}-pod-${i}`, uid: `pod-uid-${i}` },
    })),
    ports: ports.map((p) => ({ name: p.name ?? '', port: p.port, protocol: p.protocol ?? 'TCP' })),
  };
}
