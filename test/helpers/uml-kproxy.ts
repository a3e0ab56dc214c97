// The real kproxy process inside a user-mode-linux guest, in a sandbox's
// node namespace (uml-sandbox.ts), watched through its own /healthz and
// /metrics as on the host (kproxy-process.ts). Starting Node.js in the guest
// is slow (kproxy takes 5-15 s to its first sync there), so one prober
// process per namespace answers every HTTP question.
import { guestPath, type GuestExit, type GuestProcess, type Uml } from './uml.ts';
import { healthzPort, kproxyArgs, kproxyBin, kproxyNodeFlags, metricValue, metricsPort } from './kproxy-process.ts';
import { addresses } from './netns.ts';
import type { UmlSandbox } from './uml-sandbox.ts';

const node = (): string => guestPath(process.execPath);

/** The kproxy command line inside the guest, with host paths translated. */
function argvOf(args: readonly string[]): string[] {
  return [node(), ...kproxyNodeFlags(), guestPath(kproxyBin), ...args];
}

/**
 * Only the legacy iptables works in this kernel (no nf_tables for IPv4):
 * every mode uses it. Node.js keeps the type-stripped sources in a cache on
 * the guest's tmpfs, as the image does: a kproxy start after the first in a
 * guest takes about half as long there (1.7 s instead of 3.7-4.7 s for `dump`).
 */
export const umlKproxyEnv: Readonly<Record<string, string>> = { KPROXY_IPTABLES_VARIANT: 'legacy', NODE_COMPILE_CACHE: '/tmp/kproxy-compile-cache' };

// Answers {id, url, timeoutMs} lines with {id, status, body} (status 0 and `error` when the request failed).
const proberScript = String.raw`
const readline = require('node:readline');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const r = JSON.parse(line);
  try {
    const res = await fetch(r.url, { signal: AbortSignal.timeout(r.timeoutMs) });
    say({ id: r.id, status: res.status, body: await res.text() });
  } catch (e) {
    say({ id: r.id, status: 0, body: '', error: String((e && e.cause && e.cause.code) || e) });
  }
});
say({ id: 0, status: 0, body: 'ready' });
`;

export interface UmlProber {
  get(url: string, timeoutMs?: number): Promise<{ status: number; body: string; error?: string }>;
  stop(): Promise<void>;
}

export async function startUmlProber(uml: Uml, ns: string): Promise<UmlProber> {
  const p = await uml.spawn(['ip', 'netns', 'exec', ns, node(), '-e', proberScript]);
  const waiting = new Map<number, (m: { status: number; body: string; error?: string }) => void>();
  let ids = 0;
  const first = JSON.parse(await p.nextLine(60_000)) as { id: number };
  if (first.id !== 0) throw new Error('the prober did not start');
  void (async () => {
    for (;;) {
      let m: { id: number; status: number; body: string; error?: string };
      try {
        m = JSON.parse(await p.nextLine(3_600_000));
      } catch (e) {
        for (const w of waiting.values()) w({ status: 0, body: '', error: String(e) });
        waiting.clear();
        return;
      }
      waiting.get(m.id)?.(m);
      waiting.delete(m.id);
    }
  })();
  return {
    async get(url, timeoutMs = 3000) {
      const id = ++ids;
      const answer = new Promise<{ status: number; body: string; error?: string }>((r) => waiting.set(id, r));
      await p.write(`${JSON.stringify({ id, url, timeoutMs })}\n`);
      return answer;
    },
    stop: () => p.kill(),
  };
}

export interface UmlKproxy {
  readonly args: readonly string[];
  logs(): string;
  readonly exited: Promise<GuestExit>;
  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<GuestExit>;
  syncCount(): Promise<number>;
  waitForSyncAfter(count: number, timeoutMs?: number): Promise<number>;
}

export interface UmlKproxyOptions {
  readonly mode: string;
  /** A host path of the YAML source file. */
  readonly sourceFile?: string;
  /** A host path of a kubeconfig. */
  readonly kubeconfig?: string;
  readonly extraArgs?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly readyTimeoutMs?: number;
}

export async function startUmlKproxy(uml: Uml, sandbox: UmlSandbox, prober: UmlProber, opts: UmlKproxyOptions): Promise<UmlKproxy> {
  const args = kproxyArgs({
    mode: opts.mode,
    ...(opts.sourceFile ? { sourceFile: guestPath(opts.sourceFile) } : {}),
    ...(opts.kubeconfig ? { kubeconfig: guestPath(opts.kubeconfig) } : {}),
    extraArgs: opts.extraArgs,
  });
  const p: GuestProcess = await uml.spawn(['ip', 'netns', 'exec', sandbox.node, ...argvOf(args)], {
    env: { ...umlKproxyEnv, KPROXY_LOG_LEVEL: process.env.KPROXY_LOG_LEVEL ?? 'info', ...opts.env },
  });
  let exit: GuestExit | undefined;
  void p.exited.then((e) => { exit = e; });
  const syncCount = async (): Promise<number> => {
    const r = await prober.get(`http://127.0.0.1:${metricsPort}/metrics`);
    if (r.status !== 200) throw new Error(`kproxy metrics answered ${r.status} ${r.error ?? ''}`);
    return metricValue(r.body, 'kubeproxy_sync_proxy_rules_duration_seconds_count') ?? 0;
  };
  const k: UmlKproxy = {
    args,
    logs: () => p.output(),
    exited: p.exited,
    async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (!exit) await p.kill(signal);
      const timer = setTimeout(() => { void p.kill('SIGKILL'); }, timeoutMs);
      const e = await p.exited;
      clearTimeout(timer);
      return e;
    },
    syncCount,
    async waitForSyncAfter(count, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const n = await syncCount();
        if (n > count) return n;
        if (Date.now() > deadline) throw new Error(`kproxy did not sync within ${timeoutMs} ms (still ${n} syncs)\n${p.output().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 120_000);
  for (;;) {
    if (exit) throw new Error(`kproxy exited before it was ready (${exit.code ?? exit.signal}): ${args.join(' ')}\n${p.output().slice(-4000)}`);
    const r = await prober.get(`http://127.0.0.1:${healthzPort}/healthz`, 2000);
    if (r.status === 200) return k;
    if (Date.now() > deadline) {
      await p.kill('SIGKILL');
      throw new Error(`kproxy not healthy within ${opts.readyTimeoutMs ?? 120_000} ms (healthz ${r.status} ${r.error ?? r.body})\n${p.output().slice(-4000)}`);
    }
    await new Promise((res) => setTimeout(res, 200));
  }
}

/** A one-shot kproxy command (--cleanup, dump, diff, explain) in namespace `ns` of the guest. */
export async function runUmlKproxy(uml: Uml, ns: string, args: readonly string[], env: Readonly<Record<string, string>> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await uml.run(['ip', 'netns', 'exec', ns, ...argvOf(args)], { env: { ...umlKproxyEnv, KPROXY_LOG_LEVEL: 'warn', ...env }, timeoutMs: 180_000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

export { addresses };
