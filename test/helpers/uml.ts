// A real IPVS kernel for tests: Debian's user-mode-linux kernel booted as an
// ordinary process, once per test file, with the host's root filesystem
// mounted through hostfs (so the project's Node.js, its node_modules and the
// kernel tools run inside unchanged). Commands run inside it from the host
// test process through a small runner (uml-runner.ts) reached over a UML
// serial line: one boot serves many commands, long-running processes
// (servers in namespaces, a kproxy process) and namespaces made inside.
//
//   const uml = await bootUml();            // in test.before
//   await uml.exec(['ipvsadm', '-Ln']);      // rejects on a non-zero exit
//   const r = await uml.run(['sh', '-c', 'exit 3']);   // r.code === 3
//   const p = await uml.spawn(['ip', 'netns', 'exec', 'ns1', 'node', ...]);
//   await p.nextLine(); p.kill();
//   await uml.halt();                        // in test.after.always
//
// Layout inside the guest: /proc, /sys and a tmpfs on /tmp and /run (so
// `ip netns add` and the xtables lock stay inside; the host's /tmp stays
// reachable at /run/host-tmp, see guestPath). Modules come from
// /usr/lib/uml/modules/<version> through `modprobe -d`. Only the legacy
// iptables variant works in this kernel (`iptables-legacy*`).
//
// Costs measured on the development machine (2 cores shared with other
// work, Debian 12, user-mode-linux 6.1um4, Node 24; test/uml-harness.test.ts
// logs them on every run):
//   boot until the runner answers       2.0-3.2 s (the kernel itself 0.3 s, the rest
//                                       Node.js starting the runner inside)
//   loading the modules below           0.2-0.6 s (one modprobe)
//   run(['true'])                       26-56 ms round trip, of which 1-4 ms is the channel
//                                       and the rest starting a process inside the guest
//   a Node.js process started inside    0.5-1 s until its first line; `kproxy dump` 7.5-8.7 s
//   halt                                0.1-0.3 s
// On hosts whose CPUs have a large XSAVE area (AVX-512, AMX) Debian's 6.1
// UML kernel cannot restore FPU state through ptrace and panics at its first
// process; a tiny LD_PRELOAD shim (uml-xstate-shim.c, built here with gcc)
// fixes the buffer size. See that file.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { alive } from './netns.ts';

export const umlKernel = '/usr/bin/linux.uml';
export const umlModulesRoot = '/usr/lib/uml/modules';
const runnerPath = fileURLToPath(new URL('./uml-runner.ts', import.meta.url));
const shimSource = fileURLToPath(new URL('./uml-xstate-shim.c', import.meta.url));

/** Modules every boot loads: IPVS and its schedulers, links, and what iptables-legacy, ipset and conntrack need. */
export const umlModules: readonly string[] = [
  'ipv6', 'ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_lc', 'ip_vs_wlc', 'ip_vs_sh', 'ip_vs_dh', 'ip_vs_sed', 'ip_vs_nq', 'ip_vs_mh',
  'dummy', 'veth', 'bridge', 'sctp',
  'nf_conntrack', 'nf_conntrack_netlink', 'nf_nat',
  'ip_tables', 'iptable_nat', 'iptable_filter', 'iptable_mangle', 'iptable_raw', 'ipt_REJECT',
  'ip6_tables', 'ip6table_nat', 'ip6table_filter', 'ip6table_mangle', 'ip6table_raw', 'ip6t_REJECT',
  'xt_comment', 'xt_mark', 'xt_MASQUERADE', 'xt_addrtype', 'xt_conntrack', 'xt_set', 'xt_ipvs', 'xt_multiport',
  'xt_statistic', 'xt_recent', 'xt_nat', 'xt_tcpudp',
  'ip_set', 'ip_set_hash_ip', 'ip_set_hash_ipport', 'ip_set_hash_ipportip', 'ip_set_hash_ipportnet', 'ip_set_hash_net', 'ip_set_bitmap_port',
];

/** Host tools the guest runs (through hostfs) or the harness needs, with their Debian packages. */
const requiredFiles: readonly { readonly path: string; readonly pkg: string; readonly what: string }[] = [
  { path: umlKernel, pkg: 'user-mode-linux', what: 'the UML kernel' },
  { path: '/usr/sbin/modprobe', pkg: 'kmod', what: 'modprobe' },
  { path: '/usr/bin/gcc', pkg: 'gcc', what: 'gcc (builds the ptrace shim)' },
  { path: '/usr/sbin/ipvsadm', pkg: 'ipvsadm', what: 'ipvsadm' },
  { path: '/usr/sbin/ipset', pkg: 'ipset', what: 'ipset' },
  { path: '/usr/sbin/iptables-legacy', pkg: 'iptables', what: 'iptables-legacy' },
  { path: '/usr/sbin/ip', pkg: 'iproute2', what: 'ip' },
];

/** The kernel version whose modules ship with linux.uml (the one directory under /usr/lib/uml/modules). */
function moduleVersion(): string | undefined {
  try {
    return readdirSync(umlModulesRoot).find((d) => existsSync(join(umlModulesRoot, d, 'modules.dep')));
  } catch {
    return undefined;
  }
}

/**
 * What is missing to boot the test kernel, naming the Debian packages to
 * install, or undefined when nothing is. `files` is for tests.
 */
export function missingUmlPrerequisites(files: readonly { readonly path: string; readonly pkg: string; readonly what: string }[] = requiredFiles): string | undefined {
  const missing = files.filter(({ path }) => {
    try {
      accessSync(path, constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  const problems = missing.map((m) => `${m.what} (${m.path})`);
  const pkgs = new Set(missing.map((m) => m.pkg));
  if (files === requiredFiles && !missing.some((m) => m.pkg === 'user-mode-linux') && !moduleVersion()) {
    problems.push(`kernel modules under ${umlModulesRoot}/<version>`);
    pkgs.add('user-mode-linux');
  }
  if (problems.length === 0) return undefined;
  return `cannot boot the IPVS test kernel: missing ${problems.join(', ')}; install with: apt-get install -y ${[...pkgs].join(' ')}`;
}

/** Throws when this machine cannot boot the test kernel. Never skip an IPVS test silently. */
export function requireUmlPrerequisites(): void {
  const problem = missingUmlPrerequisites();
  if (problem) throw new Error(problem);
}

/** Removes the directories of earlier boots whose test process is gone (a crashed run). */
function sweepLeftovers(base: string): void {
  for (const name of readdirSync(base)) {
    const m = /^kproxy-uml-(\d+)-/.exec(name);
    if (m && !alive(Number(m[1]))) rmSync(join(base, name), { recursive: true, force: true });
  }
}

export interface RunOptions {
  /** Written to the command's stdin (any size: large requests travel through a file). */
  readonly input?: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Kill the command (SIGKILL to its process group) after this long; default 120 s. */
  readonly timeoutMs?: number;
}

export interface RunResult {
  readonly code: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  /** Wall time of the command inside the guest, from spawn to exit (excludes the channel). */
  readonly ms: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface GuestExit {
  readonly code: number | null;
  readonly signal: string | null;
}

/** A process running inside the guest. */
export interface GuestProcess {
  readonly pid: number;
  /** The next stdout line (waits for it; rejects once the process has exited without one). */
  nextLine(timeoutMs?: number): Promise<string>;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  write(data: string): Promise<void>;
  /** Closes its stdin. */
  end(): Promise<void>;
  /** Signals its process group (default SIGKILL); no error when it is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  readonly exited: Promise<GuestExit>;
}

export interface Uml {
  /** The linux.uml process on the host (it leads its own process group). */
  readonly pid: number;
  /** A directory on the host, visible at guestPath(dir) inside: for large files both sides read. */
  readonly dir: string;
  readonly kernelVersion: string;
  /** Time from spawning linux.uml until the runner answered, and to load the modules. */
  readonly bootMs: number;
  readonly modulesMs: number;
  /** Runs a command to its end; resolves whatever its exit status. */
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** As run(), but rejects with the command's stderr on a non-zero exit. */
  exec(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** exec(['/bin/sh', '-c', script]). */
  sh(script: string, opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running process; kill it, or halt() does. */
  spawn(argv: readonly string[], opts?: { env?: Readonly<Record<string, string>> }): Promise<GuestProcess>;
  /** The last lines the guest kernel and init printed on its console. */
  consoleTail(): string;
  /** Halts the guest (SIGKILL after `timeoutMs`, default 15 s) and removes dir; safe to call twice. */
  halt(timeoutMs?: number): Promise<void>;
}

/** Where a host path appears inside the guest (the guest mounts its own tmpfs over /tmp). */
export function guestPath(hostPath: string): string {
  return hostPath === '/tmp' || hostPath.startsWith('/tmp/') ? `/run/host-tmp${hostPath.slice(4)}` : hostPath;
}

function initScript(modulesDir: string): string {
  return `#!/bin/sh
# Init of a kproxy test guest (written by test/helpers/uml.ts).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/host-tmp
mount --bind /tmp /run/host-tmp
mount -t tmpfs tmpfs /tmp
mkdir -p ${modulesDir}/lib/modules
ln -s ${umlModulesRoot}/$(uname -r) ${modulesDir}/lib/modules/$(uname -r)
ip link set lo up
echo "kproxy-uml: starting the runner"
${guestPath(process.execPath)} ${guestPath(runnerPath)} /dev/ttyS0
echo "kproxy-uml: runner exited ($?), halting"
halt -f || poweroff -f
`;
}

function buildShim(dir: string): string {
  const out = join(dir, 'uml-xstate-shim.so');
  const r = spawnSync('/usr/bin/gcc', ['-O2', '-shared', '-fPIC', '-o', out, shimSource], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gcc could not build ${shimSource}: ${r.stderr || r.error}`);
  return out;
}

interface Pending {
  resolve(message: Record<string, unknown>): void;
  reject(error: Error): void;
}

interface ProcessState {
  stdout: string;
  all: string;
  lines: string[];
  waiters: Pending[];
  exit?: GuestExit;
  onExit: (e: GuestExit) => void;
}

// Requests longer than this travel through a file on hostfs; at most
// `window` bytes of request lines are unacknowledged at a time (the guest's
// serial line drops input beyond its 4 KB tty buffer).
const inlineLimit = 900;
const window = 2048;

/** Boots the guest and loads the modules; call once per test file and halt() in an always-after hook. */
export async function bootUml(opts: { memMB?: number; modules?: readonly string[]; bootTimeoutMs?: number } = {}): Promise<Uml> {
  requireUmlPrerequisites();
  const base = process.env.KPROXY_UML_TMPDIR ?? '/var/tmp';
  mkdirSync(base, { recursive: true });
  sweepLeftovers(base);
  const dir = mkdtempSync(join(base, `kproxy-uml-${process.pid}-`));
  const modulesDir = '/tmp/kproxy-modules';
  const initPath = join(dir, 'init.sh');
  let shim: string;
  try {
    shim = buildShim(dir);
    writeFileSync(initPath, initScript(modulesDir), { mode: 0o755 });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const started = Date.now();
  const umid = `kproxy-${process.pid}-${started.toString(36)}`;
  const child: ChildProcess = spawn(umlKernel, [
    `mem=${opts.memMB ?? 1024}M`, 'root=/dev/root', 'rootfstype=hostfs', 'rootflags=/', 'rw',
    `init=${guestPath(initPath)}`, 'con=null', 'con0=fd:0,fd:1', 'ssl=null', 'ssl0=fd:3,fd:3',
    'quiet', `uml_dir=${dir}`, `umid=${umid}`,
  ], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, LD_PRELOAD: shim } });
  // If this process dies without halt(), the guest goes with it: the runner sees
  // its line close and halts; this catches a normal exit that skipped halt().
  const killGroup = (): void => {
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
  };
  const groupAlive = (): boolean => {
    try {
      process.kill(-child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  process.once('exit', killGroup);

  let consoleText = '';
  const keep = (b: Buffer): void => {
    consoleText = (consoleText + b.toString()).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const consoleTail = (): string => consoleText.split('\n').slice(-40).join('\n');

  const channel = child.stdio[3] as Duplex;
  const pending = new Map<number, Pending>();
  const processes = new Map<number, ProcessState>();
  let nextId = 1;
  const unacked = new Map<number, number>();
  let inFlight = 0;
  const queue: { id: number; line: string }[] = [];
  let exited: GuestExit | undefined;
  let onReady: ((uptime: number) => void) | undefined;
  let onBootFailure: ((e: Error) => void) | undefined;

  const flush = (): void => {
    while (queue.length > 0 && (inFlight === 0 || inFlight + queue[0].line.length <= window)) {
      const { id, line } = queue.shift()!;
      unacked.set(id, line.length);
      inFlight += line.length;
      channel.write(line);
    }
  };

  const failAll = (why: string): void => {
    const error = new Error(`${why}\n--- guest console ---\n${consoleTail()}`);
    for (const p of pending.values()) p.reject(error);
    pending.clear();
    for (const s of processes.values()) {
      if (!s.exit) s.onExit({ code: null, signal: 'SIGKILL' });
    }
    onBootFailure?.(error);
  };

  child.on('exit', (code, signal) => {
    exited = { code, signal };
    process.removeListener('exit', killGroup);
    failAll(`linux.uml exited (${code ?? signal})`);
  });
  child.on('error', (e) => failAll(`linux.uml could not run: ${e.message}`));

  const early = new Map<number, Record<string, unknown>[]>();
  const deliver = (s: ProcessState, m: Record<string, unknown>): void => {
    if (m.event === 'exit') {
      s.onExit({ code: m.code as number | null, signal: m.signal as string | null });
      return;
    }
    const data = String(m.data);
    s.all += data;
    if (m.stream !== 'stdout') return;
    s.stdout += data;
    let nl: number;
    while ((nl = s.stdout.indexOf('\n')) >= 0) {
      const l = s.stdout.slice(0, nl);
      s.stdout = s.stdout.slice(nl + 1);
      const w = s.waiters.shift();
      if (w) w.resolve({ line: l }); else s.lines.push(l);
    }
  };

  createInterface({ input: channel, crlfDelay: Infinity }).on('line', (line) => {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      keep(Buffer.from(`[channel noise] ${line.slice(0, 200)}\n`));
      return;
    }
    if (typeof m.ack === 'number') {
      inFlight -= unacked.get(m.ack) ?? 0;
      unacked.delete(m.ack);
      flush();
    } else if (m.event === 'ready') {
      onReady?.(Number(m.uptime));
    } else if (m.event === 'out' || m.event === 'exit') {
      const s = processes.get(Number(m.pid));
      // Output can arrive in the same read as the answer to the spawn request,
      // before the caller has registered the process: keep it until then.
      if (!s) {
        early.set(Number(m.pid), [...(early.get(Number(m.pid)) ?? []), m]);
        return;
      }
      deliver(s, m);
    } else if (m.event === 'error') {
      keep(Buffer.from(`[runner] ${String(m.error)}\n`));
    } else if (typeof m.id === 'number') {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (!p) return;
      if (m.ok) p.resolve(m); else p.reject(new Error(String(m.error)));
    }
  });

  const request = (body: Record<string, unknown>): Promise<Record<string, unknown>> => {
    if (exited) return Promise.reject(new Error(`the guest has exited (${exited.code ?? exited.signal})\n${consoleTail()}`));
    const id = nextId++;
    const text = JSON.stringify({ id, ...body });
    let line = text + '\n';
    if (line.length > inlineLimit) {
      const file = join(dir, `request-${id}.json`);
      writeFileSync(file, text);
      line = JSON.stringify({ spool: guestPath(file) }) + '\n';
    }
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      queue.push({ id, line });
      flush();
    });
  };

  const bootTimeoutMs = opts.bootTimeoutMs ?? 90_000;
  try {
    await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the guest did not start its runner within ${bootTimeoutMs} ms\n--- guest console ---\n${consoleTail()}`)), bootTimeoutMs);
      onReady = (u) => { clearTimeout(timer); resolve(u); };
      onBootFailure = (e) => { clearTimeout(timer); reject(new Error(`booting ${umlKernel} failed: ${e.message}`)); };
    });
  } catch (e) {
    killGroup();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  onBootFailure = undefined;
  const bootMs = Date.now() - started;

  const run = async (argv: readonly string[], o: RunOptions = {}): Promise<RunResult> => {
    const m = await request({ op: 'run', argv, input: o.input, env: o.env, timeoutMs: o.timeoutMs ?? 120_000 });
    return {
      code: m.code as number | null,
      signal: m.signal as string | null,
      timedOut: Boolean(m.timedOut),
      ms: Number(m.ms),
      stdout: String(m.stdout),
      stderr: String(m.stderr),
    };
  };
  const exec = async (argv: readonly string[], o: RunOptions = {}): Promise<RunResult> => {
    const r = await run(argv, o);
    if (r.code !== 0) {
      const what = r.timedOut ? `timed out after ${o.timeoutMs ?? 120_000} ms` : `exit ${r.code ?? r.signal}`;
      throw new Error(`in the guest: ${argv.join(' ').slice(0, 300)} failed (${what}): ${(r.stderr || r.stdout).trim().slice(0, 2000)}`);
    }
    return r;
  };

  let halted: Promise<void> | undefined;
  let kernelVersion = '';
  let modulesMs = 0;
  const uml: Uml = {
    pid: child.pid!,
    dir,
    get kernelVersion() { return kernelVersion; },
    bootMs,
    get modulesMs() { return modulesMs; },
    run,
    exec,
    sh: (script, o) => exec(['/bin/sh', '-c', script], o),
    async spawn(argv, o = {}) {
      const m = await request({ op: 'spawn', argv, env: o.env });
      const pid = Number(m.pid);
      let resolveExit!: (e: GuestExit) => void;
      const exitedP = new Promise<GuestExit>((r) => { resolveExit = r; });
      const state: ProcessState = {
        stdout: '', all: '', lines: [], waiters: [],
        onExit: (e) => {
          state.exit = e;
          processes.delete(pid);
          const err = new Error(`${argv.join(' ').slice(0, 200)} exited (${e.code ?? e.signal}): ${state.all.trim().slice(-1000)}`);
          for (const w of state.waiters.splice(0)) w.reject(err);
          resolveExit(e);
        },
      };
      processes.set(pid, state);
      for (const m of early.get(pid) ?? []) deliver(state, m);
      early.delete(pid);
      return {
        pid,
        exited: exitedP,
        output: () => state.all,
        nextLine(timeoutMs = 30_000) {
          const l = state.lines.shift();
          if (l !== undefined) return Promise.resolve(l);
          if (state.exit) return Promise.reject(new Error(`${argv[0]} exited (${state.exit.code ?? state.exit.signal}): ${state.all.trim().slice(-1000)}`));
          return new Promise<string>((resolve, reject) => {
            const timer = setTimeout(() => {
              state.waiters = state.waiters.filter((w) => w !== waiter);
              reject(new Error(`${argv.join(' ').slice(0, 200)}: no output line within ${timeoutMs} ms; output so far: ${state.all.trim().slice(-1000)}`));
            }, timeoutMs);
            const waiter: Pending = {
              resolve: (msg) => { clearTimeout(timer); resolve(String(msg.line)); },
              reject: (e) => { clearTimeout(timer); reject(e); },
            };
            state.waiters.push(waiter);
          });
        },
        async write(data) { await request({ op: 'write', pid, data }); },
        async end() { await request({ op: 'write', pid, end: true }); },
        async kill(signal = 'SIGKILL') {
          if (state.exit) return;
          await request({ op: 'kill', pid, signal }).catch(() => { /* already gone */ });
        },
      };
    },
    consoleTail,
    halt(timeoutMs = 15_000) {
      halted ??= (async () => {
        if (!exited) {
          const gone = new Promise<void>((r) => child.once('exit', () => r()));
          request({ op: 'halt' }).catch(() => { /* the guest may go before answering */ });
          const timer = setTimeout(killGroup, timeoutMs);
          await gone;
          clearTimeout(timer);
        }
        // UML's other host processes share the group: make sure none is left.
        killGroup();
        for (let i = 0; i < 100 && groupAlive(); i++) await new Promise((r) => setTimeout(r, 50));
        rmSync(dir, { recursive: true, force: true });
      })();
      return halted;
    },
  };

  try {
    kernelVersion = (await exec(['uname', '-r'])).stdout.trim();
    const t = Date.now();
    const r = await run(['modprobe', '-d', modulesDir, '-a', ...(opts.modules ?? umlModules)]);
    if (r.code !== 0) throw new Error(`modprobe in the guest failed (exit ${r.code}): ${r.stderr.trim()}; the modules come from the user-mode-linux package (${umlModulesRoot}/${kernelVersion})`);
    modulesMs = Date.now() - t;
  } catch (e) {
    await uml.halt();
    throw e;
  }
  return uml;
}
