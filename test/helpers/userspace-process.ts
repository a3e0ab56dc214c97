// Starts test/helpers/userspace-driver.ts inside a network namespace and
// talks to it: apply a table, put Service addresses on the node, read
// counters and memory, stop or SIGTERM it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { toolPath } from '../../lib/exec.ts';
import type { ApplyResult } from '../../modes/userspace/engine.ts';
import type { ForwarderOptions, ForwarderSnapshot } from '../../modes/userspace/forwarder.ts';
import type { ForwarderTable } from '../../modes/userspace/table.ts';
import { withTimeout } from './traffic.ts';

const driver = fileURLToPath(new URL('./userspace-driver.ts', import.meta.url));

export type DriverOptions = ForwarderOptions & { handoverWaitMs?: number; drainMs?: number };

export interface ForwarderProcess {
  readonly child: ChildProcess;
  readonly pids: readonly number[];
  readonly startMs: number;
  /** Where the Service addresses went (kproxy0 or lo). */
  readonly device: string;
  apply(table: ForwarderTable): Promise<{ result: ApplyResult; ms: number }>;
  addresses(list: readonly string[]): Promise<{ ms: number }>;
  snapshot(): Promise<ForwarderSnapshot>;
  /** RSS of the supervisor and each worker, KiB. */
  rss(): Promise<{ supervisorKiB: number; workersKiB: number[] }>;
  /** SIGTERM: the handover; resolves with what it reported. */
  terminate(): Promise<{ successor: boolean; waitedMs: number }>;
  stop(): Promise<void>;
  stderr(): string;
}

export async function startForwarder(ns: string, opts: DriverOptions = {}, timeoutMs = 60_000): Promise<ForwarderProcess> {
  const child = spawn(toolPath('ip'), ['netns', 'exec', ns, process.execPath, driver], {
    env: { ...process.env, KPROXY_FORWARDER_OPTIONS: JSON.stringify(opts) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const queue: string[] = [];
  const waiters: ((l: string | undefined) => void)[] = [];
  let closed = false;
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l); else queue.push(l);
  });
  child.on('close', () => {
    closed = true;
    for (const w of waiters.splice(0)) w(undefined);
  });
  const next = async (what: string, ms = timeoutMs): Promise<Record<string, unknown>> => {
    const line = queue.shift() ?? (closed ? undefined : await withTimeout(new Promise<string | undefined>((r) => waiters.push(r)), ms, what));
    if (line === undefined) throw new Error(`forwarder exited during ${what}: ${err.trim().slice(-2000)}`);
    const v = JSON.parse(line) as Record<string, unknown>;
    if (typeof v.error === 'string') throw new Error(`forwarder: ${v.error}`);
    return v;
  };
  const call = async (cmd: Record<string, unknown>, what: string): Promise<Record<string, unknown>> => {
    child.stdin!.write(JSON.stringify(cmd) + '\n');
    return next(what);
  };
  let hello: Record<string, unknown>;
  try {
    hello = await next('start');
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    child,
    pids: hello.pids as number[],
    startMs: hello.startMs as number,
    device: hello.device as string,
    apply: async (table) => (await call({ cmd: 'apply', table }, 'apply')) as unknown as { result: ApplyResult; ms: number },
    addresses: async (list) => (await call({ cmd: 'addresses', addresses: list }, 'addresses')) as unknown as { ms: number },
    snapshot: async () => (await call({ cmd: 'snapshot' }, 'snapshot')).snapshot as ForwarderSnapshot,
    rss: async () => (await call({ cmd: 'rss' }, 'rss')) as unknown as { supervisorKiB: number; workersKiB: number[] },
    terminate: async () => {
      child.kill('SIGTERM');
      return (await next('handover', 120_000)).handover as { successor: boolean; waitedMs: number };
    },
    stop: async () => {
      if (closed) return;
      const done = new Promise((r) => child.once('close', r));
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await done;
      clearTimeout(timer);
    },
    stderr: () => err,
  };
}
