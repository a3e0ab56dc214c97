// The nftables backend against the real kernel, inside a network namespace
// this test creates and removes: the full transaction loads with the real
// nft, incremental ones apply on top, the kernel's listing agrees with the
// fake kernel's, and cleanup removes kproxy's tables only.
import test from 'ava';
import { NftablesBackend } from '../modes/nftables/backend.ts';
import { FakeNftKernel } from '../modes/nftables/fake-kernel.ts';
import { normalizeListing } from '../modes/nftables/listing.ts';
import { netnsExec } from '../modes/exec.ts';
import { fullChanges, type Changes, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { silentLogger } from '../proxy/log.ts';
import { ep, nodeState, svc } from './helpers/state.ts';
import { allServices, options } from './fixtures/nftables/scenarios.ts';
import { createNetns, deleteNetns, missingPrerequisite, nftPath, nsRun } from './fixtures/nftables/netns.ts';

test.serial.before((t) => {
  const missing = missingPrerequisite();
  if (missing) t.fail(missing);
});

function changesBetween(prev: NodeState, next: NodeState): Changes {
  const keys = new Set<string>();
  for (const [k, s] of next.services) if (JSON.stringify(prev.services.get(k)) !== JSON.stringify(s)) keys.add(k);
  for (const k of prev.services.keys()) if (!next.services.has(k)) keys.add(k);
  return { full: false, services: keys, staleUdpEndpoints: [], staleUdpServiceIPs: [] };
}

function replace(state: NodeState, ...svcs: ServicePortState[]): NodeState {
  const m = new Map(state.services);
  for (const s of svcs) m.set(s.key, s);
  return { ...state, services: m };
}

async function kernelView(ns: string): Promise<string> {
  return normalizeListing((await nsRun(ns, nftPath, ['list', 'table', 'ip', 'kproxy'])) + (await nsRun(ns, nftPath, ['list', 'table', 'ip6', 'kproxy'])));
}

function fakeView(state: NodeState): string {
  const k = new FakeNftKernel();
  k.apply(new NftablesBackend(options, silentLogger()).render(state));
  return normalizeListing(k.dump('ip', 'kproxy') + k.dump('ip6', 'kproxy'));
}

const byName = (name: string): ServicePortState => allServices.find((s) => s.name === name)!;

test.serial('full and incremental transactions load into the real kernel and match the fake kernel', async (t) => {
  const ns = await createNetns('kpx-nft');
  t.teardown(() => deleteNetns(ns));
  const backend = new NftablesBackend({ ...options, exec: netnsExec(ns) }, silentLogger());

  let state = nodeState(allServices);
  const full = await backend.sync(state, fullChanges(state));
  t.true(full.ok, full.error?.message);
  t.is(await kernelView(ns), fakeView(state), 'after the full sync');
  t.false(await backend.drifted());

  const web = byName('shop/web:http');
  const sticky = byName('shop/sticky');
  const steps: [string, NodeState][] = [];
  const moved = [web.clusterEndpoints[0], ep('10.244.3.99', 8080)];
  steps.push(['endpoints change', replace(state, { ...web, clusterEndpoints: moved, allReachableEndpoints: moved })]);
  steps.push(['affinity timeout and endpoints change', replace(steps[0][1], { ...sticky, affinityTimeoutSeconds: 60, clusterEndpoints: sticky.clusterEndpoints.slice(1), allReachableEndpoints: sticky.clusterEndpoints.slice(1) })]);
  steps.push(['a Service loses its endpoints, another appears', replace(steps[1][1],
    svc({ name: 'shop/np', clusterIP: '10.96.0.11', port: 80, nodePort: 30080 }),
    svc({ name: 'shop/late', clusterIP: 'fd00:96::99', port: 443, externalPolicyLocal: true, nodePort: 30999, clusterEndpoints: [ep('fd00:244:5::1', 8443)], localEndpoints: [] }))]);
  for (const [what, next] of steps) {
    const r = await backend.sync(next, changesBetween(state, next));
    t.true(r.ok, `${what}: ${r.error?.message}`);
    t.false(r.full);
    t.true(r.batchLines < 40, `${what}: ${r.batchLines} lines`);
    t.is(await kernelView(ns), fakeView(next), what);
    state = next;
  }

  // A periodic full sync on top of the loaded table (flush path), then a new
  // process adopting the table (delete-and-rebuild path).
  const again = await backend.sync(state, fullChanges(state));
  t.true(again.ok, again.error?.message);
  const fresh = new NftablesBackend({ ...options, exec: netnsExec(ns) }, silentLogger());
  const adopted = await fresh.sync(state, fullChanges(state));
  t.true(adopted.ok, adopted.error?.message);
  t.is(await kernelView(ns), fakeView(state), 'after adoption');

  await nsRun(ns, nftPath, ['flush', 'chain', 'ip', 'kproxy', 'nat-prerouting']);
  t.true(await fresh.drifted(), 'a flushed canary is noticed');
});

test.serial('cleanup removes only kproxy tables', async (t) => {
  const ns = await createNetns('kpx-nft');
  t.teardown(() => deleteNetns(ns));
  await nsRun(ns, nftPath, ['add', 'table', 'ip', 'foreign']);
  await nsRun(ns, nftPath, ['add', 'chain', 'ip', 'foreign', 'keep']);
  const backend = new NftablesBackend({ ...options, exec: netnsExec(ns) }, silentLogger());
  await backend.cleanup(); // nothing of kproxy's yet: must not fail
  const state = nodeState(allServices);
  t.true((await backend.sync(state, fullChanges(state))).ok);
  t.regex(await nsRun(ns, nftPath, ['list', 'tables']), /table ip kproxy[\s\S]*table ip6 kproxy/);
  await backend.cleanup();
  t.is(await nsRun(ns, nftPath, ['list', 'tables']), 'table ip foreign\n');
  t.regex(await nsRun(ns, nftPath, ['list', 'table', 'ip', 'foreign']), /chain keep/);
  t.is(await backend.readKernel(), '');
});
