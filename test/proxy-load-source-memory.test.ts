// What kproxy keeps of an object once a newer version replaced it: nothing.
// The initial list used to stay reachable for the life of the process (held
// by the list of events waiting for the tracker), so after a round of changes
// the node kept two copies of every object.
import test from 'ava';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compactHeap } from '../lib/heap.ts';
import { silentLogger } from '../lib/log.ts';
import { loadConfig } from '../proxy/config.ts';
import { loadSource } from '../proxy/load-source.ts';
import { eventually } from './helpers/source-recorder.ts';

const cluster = (endpoint: string) => `apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 172.30.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [${endpoint}]}]
`;

test('a replaced EndpointSlice from the initial list can be collected', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-load-source-'));
  const path = join(dir, 'cluster.yaml');
  await writeFile(path, cluster('10.0.0.1'));
  const config = loadConfig(['--source-file', path, '--hostname-override', 'node-a']);
  const loaded = await loadSource(config, silentLogger(), { watch: true, checkTools: false, keepObjects: true });
  t.teardown(async () => {
    await loaded.source.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const first = new WeakRef(loaded.slices.get('default/web-1')!);
  t.is(first.deref()?.endpoints?.[0]?.addresses[0], '10.0.0.1');

  await writeFile(`${path}.new`, cluster('10.0.0.2'));
  await rename(`${path}.new`, path);
  await eventually('the new version', () => loaded.slices.get('default/web-1')?.endpoints?.[0]?.addresses[0] === '10.0.0.2', 10_000);
  t.is(loaded.tracker.snapshot().state.services.size, 1);

  compactHeap();
  t.is(first.deref(), undefined, 'the first version of the EndpointSlice is still reachable after it was replaced');
});
