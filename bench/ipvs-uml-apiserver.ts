// Runs inside the user-mode-linux guest for bench/ipvs-scale.ts (the guest
// has no network to the host): the list/watch test API server
// (test/helpers/apiserver.ts) holding N synthetic Services × E endpoints, a
// Node, and one probe Service whose single endpoint is a real backend pod;
// kproxy in the same network namespace reads it through the kubeconfig this
// prints. Commands on stdin, answers on stdout, one JSON line each:
//   {"probe": 2}   move the probe Service's endpoint to pod 2 → {"changed": <epoch ms>}
// First line out: {"kubeconfig": PATH, "loadedMs": ...}.
import { createInterface } from 'node:readline';
import { TestApiServer, type KubeObject } from '../test/helpers/apiserver.ts';
import { nodeObject, serviceObject, sliceObject, type ServiceSpec } from '../test/e2e/cluster.ts';
import { syntheticService, syntheticSlice } from '../test/fixtures/proxy/synthetic.ts';
import { triggerTimeAnnotation } from '../proxy/tracker.ts';

const args = JSON.parse(process.env.KP_ARGS ?? '{}') as { services: number; endpoints: number; nodeIP: string; podIP: string[] };

export const probeIP = '10.96.0.10';

function probeSpec(pod: number): ServiceSpec {
  return {
    name: 'probe', namespace: 'bench-probe', clusterIP: probeIP,
    ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    endpoints: [{ ip: args.podIP[pod - 1], nodeName: 'node-a' }],
  };
}

function probeSlice(pod: number, at: number): KubeObject {
  const slice = sliceObject(probeSpec(pod)) as unknown as KubeObject & { metadata: Record<string, unknown> };
  slice.metadata.annotations = { [triggerTimeAnnotation]: new Date(at).toISOString() };
  return slice;
}

const t0 = Date.now();
const api = await TestApiServer.start();
api.upsert(nodeObject({ name: 'node-a', ip: args.nodeIP }) as unknown as KubeObject);
for (let i = 0; i < args.services; i++) {
  api.upsert(syntheticService(i) as unknown as KubeObject);
  api.upsert(syntheticSlice(i, args.endpoints) as unknown as KubeObject);
}
api.upsert(serviceObject(probeSpec(1)) as unknown as KubeObject);
api.upsert(probeSlice(1, Date.now()));
process.stdout.write(`${JSON.stringify({ kubeconfig: api.kubeconfigPath(), loadedMs: Date.now() - t0 })}\n`);

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { probe?: number };
  if (cmd.probe !== undefined) {
    const at = Date.now();
    api.upsert(probeSlice(cmd.probe, at));
    process.stdout.write(`${JSON.stringify({ changed: at })}\n`);
  }
});
process.stdin.on('end', () => { void api.close().then(() => process.exit(0)); });
