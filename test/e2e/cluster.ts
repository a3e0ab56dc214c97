// Builds the Kubernetes objects the file source reads (Node, Services,
// EndpointSlices) from short specs, so each e2e case states only what it is about.
import { writeFile, rename } from 'node:fs/promises';
import { stringify } from 'yaml';

export interface EndpointSpec {
  readonly ip: string;
  /** EndpointSlice nodeName: equal to kproxy's --hostname-override makes it local (default node-a). */
  readonly nodeName?: string;
  readonly ready?: boolean;
}

export interface PortSpec {
  readonly name?: string;
  readonly port: number;
  readonly targetPort: number;
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP';
  readonly nodePort?: number;
}

export interface ServiceSpec {
  readonly name: string;
  readonly namespace?: string;
  readonly type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  readonly clusterIP: string;
  readonly ports: readonly PortSpec[];
  readonly externalIPs?: readonly string[];
  /** ClientIP session affinity with this timeout in seconds. */
  readonly affinitySeconds?: number;
  readonly externalTrafficPolicy?: 'Cluster' | 'Local';
  readonly healthCheckNodePort?: number;
  readonly endpoints: readonly EndpointSpec[];
  /** Fields merged into the Service's spec as they are (to write a broken one). */
  readonly rawSpec?: Record<string, unknown>;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface NodeSpec {
  readonly name: string;
  readonly ip: string;
}

export function serviceObject(s: ServiceSpec): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: s.namespace ?? 'default', uid: `uid-${s.name}`, ...(s.annotations ? { annotations: s.annotations } : {}) },
    spec: {
      type: s.type ?? 'ClusterIP',
      clusterIP: s.clusterIP,
      clusterIPs: [s.clusterIP],
      ipFamilies: ['IPv4'],
      ports: s.ports.map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        port: p.port,
        targetPort: p.targetPort,
        protocol: p.protocol ?? 'TCP',
        ...(p.nodePort ? { nodePort: p.nodePort } : {}),
      })),
      ...(s.externalIPs ? { externalIPs: s.externalIPs } : {}),
      ...(s.affinitySeconds
        ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinitySeconds } } }
        : { sessionAffinity: 'None' }),
      ...(s.externalTrafficPolicy ? { externalTrafficPolicy: s.externalTrafficPolicy } : {}),
      ...(s.healthCheckNodePort ? { healthCheckNodePort: s.healthCheckNodePort } : {}),
      ...s.rawSpec,
    },
  };
}

export function sliceObject(s: ServiceSpec): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${s.name}-abc12`,
      namespace: s.namespace ?? 'default',
      labels: { 'kubernetes.io/service-name': s.name, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
    },
    addressType: 'IPv4',
    ports: s.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), port: p.targetPort, protocol: p.protocol ?? 'TCP' })),
    endpoints: s.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
      nodeName: e.nodeName ?? 'node-a',
    })),
  };
}

export function nodeObject(n: NodeSpec): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name } },
    status: { addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'Hostname', address: n.name }] },
  };
}

/** Every object of a cluster, in the order kubectl would print them. */
export function clusterObjects(node: NodeSpec, services: readonly ServiceSpec[]): Record<string, unknown>[] {
  return [nodeObject(node), ...services.map(serviceObject), ...services.filter((s) => s.endpoints.length > 0).map(sliceObject)];
}

/** Multi-document YAML ("---" between objects), as the file source reads it. */
export function clusterYaml(node: NodeSpec, services: readonly ServiceSpec[]): string {
  return clusterObjects(node, services).map((o) => stringify(o)).join('---\n');
}

/** Replaces `path` atomically (write then rename), so a reader never sees half a file. */
export async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}
