// Runs every case of scenarios.ts against every mode the host kernel runs
// (placement.ts; the others run in user-mode-linux, kernel-modes-uml.test.ts):
// each case in a sandbox of its own (node, three pods, a client) with a
// real kproxy process in the node namespace reading a YAML file the case rewrites.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProxyMode } from '../../modes/registry.ts';
import { addresses, createSandbox, requireKernelPrerequisites } from '../helpers/netns.ts';
import { startBackends } from '../helpers/traffic.ts';
import { clusterYaml, writeAtomically } from './cluster.ts';
import type { E2eEnv } from './env.ts';
import { hostEnv } from './host-env.ts';
import { placement } from './placement.ts';
import { runScenario, semaphore } from './run-scenario.ts';
import { scenarios, tcpPort, udpPort, type Scenario } from './scenarios.ts';

const nodeSpec = { name: 'node-a', ip: addresses.nodeIP };
requireKernelPrerequisites();
const { host: modes } = await placement();

// Sandboxes are cheap, but the machine's cores are few: a bounded number of
// cases run at once (KPROXY_E2E_CONCURRENCY, default 2).
const limit = semaphore(Number(process.env.KPROXY_E2E_CONCURRENCY ?? 2));

for (const mode of modes) {
  for (const scenario of scenarios) {
    test(`${mode}: ${scenario.title}`, (t) => limit(() => inSandbox(t, mode, scenario)));
  }
}

async function inSandbox(t: ExecutionContext, mode: ProxyMode, scenario: Scenario): Promise<void> {
  const sandbox = await createSandbox();
  t.teardown(() => sandbox.destroy());
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sourceFile = join(dir, 'cluster.yaml');
  await writeAtomically(sourceFile, clusterYaml(nodeSpec, scenario.services));
  const backends = await startBackends(sandbox.pods, { tcp: [tcpPort], udp: [udpPort] });
  t.teardown(() => backends.stop());
  const env: E2eEnv = hostEnv(sandbox, modes);
  await runScenario(t, { env, modes, mode, scenario, sourceFile, nodeSpec });
}
