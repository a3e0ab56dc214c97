// Runs one case of scenarios.ts in an environment (env.ts): starts kproxy on
// the case's Services, hands the case its context, and stops every kproxy
// it started at the end (logging their output when the case failed).
import type { ExecutionContext } from 'ava';
import type { ProxyMode } from '../../modes/registry.ts';
import { clusterYaml, type NodeSpec, type ServiceSpec } from './cluster.ts';
import type { E2eEnv, RunningKproxy } from './env.ts';
import type { Scenario, ScenarioContext } from './scenarios.ts';

/** A kproxy that forwards itself waits for a successor (10 s in these tests) and drains before it exits. */
const stopTimeoutMs = 60_000;

export interface ScenarioRun {
  readonly env: E2eEnv;
  readonly modes: readonly ProxyMode[];
  readonly mode: ProxyMode;
  readonly scenario: Scenario;
  /** The YAML file kproxy reads, already holding the case's Services. */
  readonly sourceFile: string;
  readonly nodeSpec: NodeSpec;
}

export async function runScenario(t: ExecutionContext, r: ScenarioRun): Promise<void> {
  const { env, mode, sourceFile, nodeSpec } = r;
  const all: RunningKproxy[] = [];
  t.teardown(async () => { for (const k of all) await k.stop('SIGKILL'); });
  const start = async (m: ProxyMode = mode): Promise<RunningKproxy> => {
    const k = await env.startKproxy(m, sourceFile);
    all.push(k);
    return k;
  };
  let current: RunningKproxy | undefined = await start();

  const ctx: ScenarioContext = {
    t, mode, env, modes: r.modes,
    get kproxy() {
      if (!current) throw new Error('kproxy is not running');
      return current;
    },
    async applyServices(services: readonly ServiceSpec[]) {
      const k = ctx.kproxy;
      const before = await k.syncCount();
      await env.writeSource(sourceFile, clusterYaml(nodeSpec, services));
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
    async restartKproxy(m?: ProxyMode, pauseMs = 0) {
      const old = ctx.kproxy;
      current = undefined;
      const exiting = old.stop('SIGTERM', stopTimeoutMs);
      if (pauseMs > 0) await new Promise((res) => setTimeout(res, pauseMs));
      const next = await ctx.startKproxy(m);
      const exit = await exiting;
      t.is(exit.code, 0, `kproxy exits cleanly on SIGTERM (${exit.code ?? exit.signal})`);
      return next;
    },
  };

  let failed = true;
  try {
    await r.scenario.run(ctx);
    failed = !t.passed;
  } finally {
    if (failed) {
      for (const k of all) t.log(`kproxy ${k.args.join(' ')} (${env.name}) log, last part:\n${k.logs().slice(-4000)}`);
    }
  }
}

export function semaphore(n: number): <T>(f: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: (() => void)[] = [];
  return async (f) => {
    if (active >= n) await new Promise<void>((res) => queue.push(res));
    active++;
    try {
      return await f();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}
