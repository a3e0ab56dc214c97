// kproxy with --kubeconfig against the list/watch test API server: it
// programs rules from the API, keeps them (and traffic) while the API server
// is unreachable, and applies a change made after it comes back. A malformed
// Service next to it gets one Warning Event and changes nothing else.
import test from 'ava';
import type { ProxyMode } from '../../modes/registry.ts';
import { addresses, createSandbox, requireKernelPrerequisites } from '../helpers/netns.ts';
import { connectMany, startBackends, type ClientResult } from '../helpers/traffic.ts';
import { startKproxy } from '../helpers/kproxy-process.ts';
import { TestApiServer, type KubeObject } from '../helpers/apiserver.ts';
import { nodeObject, serviceObject, sliceObject, type ServiceSpec } from './cluster.ts';
import { kubeconfigInNamespace } from './api-relay.ts';

const apiPortInNode = 6443;
const web = (pods: number[]): ServiceSpec => ({
  name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }],
  endpoints: pods.map((i) => ({ ip: addresses.podIP(i), nodeName: 'node-a' })),
});
const show = (r: ClientResult) => JSON.stringify({ ...r, failures: r.failures.slice(0, 5) });

for (const mode of ['iptables', 'nftables'] as const satisfies readonly ProxyMode[]) {
  test.serial(`${mode}: kube source programs rules, survives the API server going away, applies changes after it returns`, async (t) => {
    requireKernelPrerequisites();
    const sandbox = await createSandbox();
    t.teardown(() => sandbox.destroy());
    await startBackends(sandbox.pods, { tcp: [8080] });

    const api = await TestApiServer.start();
    t.teardown(() => api.close());
    api.upsert(nodeObject({ name: 'node-a', ip: addresses.nodeIP }) as unknown as KubeObject);
    api.upsert(serviceObject(web([1, 2, 3])) as unknown as KubeObject);
    api.upsert(sliceObject(web([1, 2, 3])) as unknown as KubeObject);
    api.upsert(serviceObject({ name: 'broken', clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 70000, targetPort: 8080 }], endpoints: [] }) as unknown as KubeObject);

    const config = await kubeconfigInNamespace(api, sandbox.node, apiPortInNode);
    t.teardown(() => config.close());
    const kubeconfig = config.path;

    const kproxy = await startKproxy({ sandbox, mode, kubeconfig });
    t.teardown(() => kproxy.stop('SIGKILL').then(() => undefined));
    let failed = true;
    try {
      const first = await connectMany(sandbox.client, '10.96.0.10', 80, { count: 60 });
      t.is(first.answered, 60, `rules from the API server: ${show(first)}`);
      t.true(Object.keys(first.byBackend).length === 3, `all three endpoints: ${show(first)}`);
      // The Event is posted beside syncing, not before it: give it a moment.
      for (const until = Date.now() + 5000; api.events.length === 0 && Date.now() < until;) await new Promise((r) => setTimeout(r, 50));
      const events = api.events.map((e) => e.object as KubeObject & { type?: string; reason?: string; message?: string; involvedObject?: { name?: string } });
      t.is(events.length, 1, `one Event: ${JSON.stringify(events)}`);
      t.like(events[0], { type: 'Warning', reason: 'InvalidService', involvedObject: { name: 'broken' }, reportingInstance: 'node-a' });
      t.regex(events[0]?.message ?? '', /spec\.ports\[0\] \(http\)\.port 70000 is not in 1-65535/);

      await api.pause('refuse');
      await new Promise((r) => setTimeout(r, 1000));
      const during = await connectMany(sandbox.client, '10.96.0.10', 80, { count: 60 });
      t.is(during.answered, 60, `traffic flows while the API server is away: ${show(during)}`);
      const running = await Promise.race([kproxy.exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 0))]);
      t.true(running, 'kproxy keeps running without the API server');

      await api.resume();
      api.upsert(sliceObject(web([1])) as unknown as KubeObject);
      // The watch comes back after its backoff; poll until the change shows.
      const deadline = Date.now() + 40_000;
      let after: ClientResult;
      do {
        await new Promise((r) => setTimeout(r, 500));
        after = await connectMany(sandbox.client, '10.96.0.10', 80, { count: 30 });
      } while (Object.keys(after.byBackend).some((b) => b !== 'pod-1') && Date.now() < deadline);
      t.is(after.answered, 30, `traffic after the change: ${show(after)}`);
      t.deepEqual(Object.keys(after.byBackend), ['pod-1'], `the change made after the API server returned is applied: ${show(after)}`);
      t.is(api.events.length, 1, 'the outage and relist posted no second Event');
      failed = !t.passed;
    } finally {
      if (failed) t.log(kproxy.logs().slice(-4000));
    }
  });
}
