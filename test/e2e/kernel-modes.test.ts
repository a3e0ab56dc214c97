// Runs every case of scenarios.ts against every kernel mode: each case in a
// sandbox of its own (node, three pods, a client) with a real kproxy
// process in the node namespace reading a YAML file the case rewrites.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProxyMode } from '../../modes/registry.ts';
import { addresses, createSandbox, requireKernelPrerequisites } from '../helpers/netns.ts';
import { startBackends } from '../helpers/traffic.ts';
import { startKproxy, type KproxyProcess } from '../helpers/kproxy-process.ts';
import { clusterYaml, writeAtomically, type ServiceSpec } from './cluster.ts';
import { scenarios, tcpPort, udpPort, type Scenario, type ScenarioContext } from './scenarios.ts';
import { hostModes } from './kernel-state.ts';

// Every registered mode that runs on this host's kernel; a mode needing a
// kernel module runs this same table where that module exists (see the
// mode's own e2e file, e.g. in user-mode-linux).
const modes: readonly ProxyMode[] = hostModes;
const nodeSpec = { name: 'node-a', ip: addresses.nodeIP };
/** A kproxy that forwards itself waits for a successor (10 s in these tests) and drains before it exits. */
const stopTimeoutMs = 60_000;

// Sandboxes are cheap, but the machine's cores are few: a bounded number of
// cases run at once (KPROXY_E2E_CONCURRENCY, default 2).
const limit = semaphore(Number(process.env.KPROXY_E2E_CONCURRENCY ?? 2));

for (const mode of modes) {
  for (const scenario of scenarios) {
    test(`${mode}: ${scenario.title}`, (t) => limit(() => runScenario(t, mode, scenario)));
  }
}

async function runScenario(t: ExecutionContext, mode: ProxyMode, scenario: Scenario): Promise<void> {
  requireKernelPrerequisites();
  const sandbox = await createSandbox();
  t.teardown(() => sandbox.destroy());
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sourceFile = join(dir, 'cluster.yaml');
  await writeAtomically(sourceFile, clusterYaml(nodeSpec, scenario.services));
  const backends = await startBackends(sandbox.pods, { tcp: [tcpPort], udp: [udpPort] });
  t.teardown(() => backends.stop());

  const all: KproxyProcess[] = [];
  t.teardown(async () => { for (const k of all) await k.stop('SIGKILL'); });
  const start = async (m: ProxyMode = mode): Promise<KproxyProcess> => {
    const k = await startKproxy({ sandbox, mode: m, sourceFile });
    all.push(k);
    return k;
  };
  let current: KproxyProcess | undefined = await start();

  const ctx: ScenarioContext = {
    t, mode, sandbox,
    get kproxy() {
      if (!current) throw new Error('kproxy is not running');
      return current;
    },
    async applyServices(services: readonly ServiceSpec[]) {
      const k = ctx.kproxy;
      const before = await k.syncCount();
      await writeAtomically(sourceFile, clusterYaml(nodeSpec, services));
      await k.waitForSyncAfter(before);
    },
    async stopKproxy() {
      const k = ctx.kproxy;
      current = undefined;
      const exit = await k.stop('SIGTERM', stopTimeoutMs);
      t.is(exit.code, 0, `kproxy exits cleanly on SIGTERM (${exit.code ?? exit.signal})`);
    },
    async startKproxy(m?: ProxyMode) {
      if (current) throw new Error('kproxy is already running');
      current = await start(m);
      return current;
    },
    // As a rolling update does it: SIGTERM to the old kproxy, the new one
    // started after the pause without waiting for the old one to exit (a
    // mode that forwards itself keeps serving until its successor listens).
    async restartKproxy(m?: ProxyMode, pauseMs = 0) {
      const old = ctx.kproxy;
      current = undefined;
      const exiting = old.stop('SIGTERM', stopTimeoutMs);
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      const next = await ctx.startKproxy(m);
      const exit = await exiting;
      t.is(exit.code, 0, `kproxy exits cleanly on SIGTERM (${exit.code ?? exit.signal})`);
      return next;
    },
  };

  let failed = true;
  try {
    await scenario.run(ctx);
    failed = !t.passed;
  } finally {
    if (failed) {
      for (const k of all) t.log(`kproxy ${k.args.join(' ')} (pid ${k.pid}) log, last part:\n${k.logs().slice(-4000)}`);
    }
  }
}

function semaphore(n: number): <T>(f: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return async (f) => {
    if (active >= n) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await f();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}
