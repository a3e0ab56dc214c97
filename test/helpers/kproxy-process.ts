// Runs the real kproxy binary (bin/kproxy.js) inside a sandbox's node
// namespace, the way a node would run it, and watches it through its own
// healthz and metrics endpoints.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { toolPath } from '../../lib/exec.ts';
import type { ProxyMode } from '../../modes/registry.ts';
import { addresses, runStatus, type Sandbox } from './netns.ts';
import { httpGet } from './traffic.ts';

export const kproxyBin = fileURLToPath(new URL('../../bin/kproxy.js', import.meta.url));

/**
 * The Node.js flags the kproxy command runs with (its shebang, `env -S node
 * FLAGS`), so tests and benchmarks run the process an operator gets.
 */
export function kproxyNodeFlags(): string[] {
  const first = readFileSync(kproxyBin, 'utf8').split('\n', 1)[0];
  const m = /^#!\/usr\/bin\/env -S node(.*)$/.exec(first);
  if (!m) throw new Error(`bin/kproxy.js does not start with "#!/usr/bin/env -S node": ${first}`);
  return m[1].split(' ').filter(Boolean);
}

// Ports belong to the node namespace, so fixed ones never collide across sandboxes.
export const healthzPort = 10256;
export const metricsPort = 10249;

export interface KproxyOptions {
  readonly sandbox: Sandbox;
  readonly mode: ProxyMode;
  /** YAML file of Services/EndpointSlices/Nodes (--source-file). */
  readonly sourceFile?: string;
  /** Talk to an API server instead (--kubeconfig). */
  readonly kubeconfig?: string;
  /** --hostname-override (default node-a). */
  readonly hostname?: string;
  readonly extraArgs?: readonly string[];
  /** How long to wait for the first healthy sync (default 60 s: a loaded CI machine starts Node.js slowly). */
  readonly readyTimeoutMs?: number;
  /** Extra environment (e.g. KPROXY_IPTABLES_VARIANT). */
  readonly env?: Readonly<Record<string, string>>;
  /** A command kproxy runs under inside the node namespace (e.g. unshare for a PID namespace of its own). */
  readonly wrap?: readonly string[];
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface KproxyProcess {
  readonly pid: number;
  readonly args: readonly string[];
  /** Everything it wrote to stdout and stderr so far (pino JSON lines). */
  logs(): string;
  readonly exited: Promise<Exit>;
  /** Sends `signal` (default SIGTERM) and waits for the exit (SIGKILL after `timeoutMs`). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** Completed syncs, from kubeproxy_sync_proxy_rules_duration_seconds_count. */
  syncCount(): Promise<number>;
  /** The text of its /metrics. */
  metrics(): Promise<string>;
  /** Waits until more than `count` syncs have completed; returns the new count. */
  waitForSyncAfter(count: number, timeoutMs?: number): Promise<number>;
}

export function kproxyArgs(opts: Omit<KproxyOptions, 'sandbox' | 'readyTimeoutMs'> & { readonly sandbox?: Sandbox }): string[] {
  return [
    '--proxy-mode', opts.mode,
    ...(opts.sourceFile ? ['--source-file', opts.sourceFile] : []),
    ...(opts.kubeconfig ? ['--kubeconfig', opts.kubeconfig] : []),
    '--hostname-override', opts.hostname ?? 'node-a',
    '--cluster-cidr', addresses.clusterCIDR,
    '--iptables-min-sync-period', '0s',
    '--healthz-bind-address', `0.0.0.0:${healthzPort}`,
    '--metrics-bind-address', `127.0.0.1:${metricsPort}`,
    // A kproxy forwarding in userspace mode keeps serving on SIGTERM until a
    // successor listens beside it (a minute by default): a test's kproxy
    // often has none. Every mode accepts every mode's flags.
    '--userspace-handover-timeout', '10s',
    ...(opts.extraArgs ?? []),
  ];
}

/** Reads a counter or gauge from a Prometheus text exposition (sum over label sets). */
export function metricValue(text: string, name: string): number | undefined {
  let found = false;
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + ' ') || line.startsWith(name + '{')) {
      found = true;
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return found ? sum : undefined;
}

export async function startKproxy(opts: KproxyOptions): Promise<KproxyProcess> {
  const args = kproxyArgs(opts);
  const node = opts.sandbox.node;
  const child = spawn(toolPath('ip'), ['netns', 'exec', node, ...(opts.wrap ?? []), process.execPath, ...kproxyNodeFlags(), kproxyBin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KPROXY_LOG_LEVEL: process.env.KPROXY_LOG_LEVEL ?? 'info', ...opts.env },
  });
  let logs = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { logs += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { logs += s; });
  const exited = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const pid = child.pid;
  if (pid === undefined) throw new Error(`kproxy did not start: ${logs}`);

  const metrics = async (): Promise<string> => {
    const r = await httpGet(node, `http://127.0.0.1:${metricsPort}/metrics`);
    if (r.status !== 200) throw new Error(`kproxy metrics answered ${r.status} ${r.error ?? ''}`);
    return r.body;
  };
  const syncCount = async (): Promise<number> => metricValue(await metrics(), 'kubeproxy_sync_proxy_rules_duration_seconds_count') ?? 0;

  const proc: KproxyProcess = {
    pid, args, exited,
    logs: () => logs,
    async stop(signal = 'SIGTERM', timeoutMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const e = await exited;
      clearTimeout(timer);
      return e;
    },
    syncCount,
    metrics,
    async waitForSyncAfter(count, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        // One slow answer (a loaded machine) is no verdict: ask again until the deadline.
        const n = await syncCount().catch((err: unknown) => err as Error);
        if (typeof n === 'number' && n > count) return n;
        if (Date.now() > deadline) throw new Error(`kproxy did not sync within ${timeoutMs} ms (${typeof n === 'number' ? `still ${n} syncs` : n.message})\n${logs}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };

  // Ready = healthz says 200 (it has synced) while the process is still alive.
  const timeoutMs = opts.readyTimeoutMs ?? 60_000;
  const ready = httpGet(node, `http://127.0.0.1:${healthzPort}/healthz`, { wantStatus: 200, deadlineMs: timeoutMs });
  const outcome = await Promise.race([ready, exited]);
  if ('code' in outcome) {
    throw new Error(`kproxy exited before it was ready (${outcome.code ?? outcome.signal}): ${kproxyBin} ${args.join(' ')}\n${logs}`);
  }
  if (outcome.status !== 200) {
    await proc.stop('SIGKILL');
    throw new Error(`kproxy not healthy within ${timeoutMs} ms (healthz ${outcome.status} ${outcome.error ?? outcome.body})\n${logs}`);
  }
  return proc;
}

/** Runs a one-shot kproxy command (dump, --cleanup, ...) in the node namespace. */
export async function runKproxy(sandbox: Sandbox, args: readonly string[], env?: Readonly<Record<string, string>>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runStatus(toolPath('ip'), ['netns', 'exec', sandbox.node, process.execPath, ...kproxyNodeFlags(), kproxyBin, ...args], undefined, env ? { ...process.env, ...env } : undefined);
}
