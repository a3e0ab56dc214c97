// A sandbox of network namespaces for kernel tests and the demo:
//
//   client (192.168.50.2) ── veth ── node (192.168.50.1, br0 10.180.0.1) ── br0 ── pod-1..N (10.180.0.11..)
//
// `node` holds the proxy's rules; pods and the client route through it.
// Every name carries a prefix, the owning process id and a random suffix, so
// parallel runs never collide and a later run can remove what a crashed one
// left behind. Nothing is created in (or sent to) the host's own namespace.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { toolPath, type ExecResult } from '../../lib/exec.ts';

/** Addresses every sandbox uses; examples/cluster.yaml matches them. */
export const addresses = {
  podCIDR: '10.180.0.0/24',
  clusterCIDR: '10.180.0.0/16',
  serviceCIDR: '10.96.0.0/12',
  bridgeIP: '10.180.0.1',
  nodeIP: '192.168.50.1',
  clientIP: '192.168.50.2',
  clientCIDR: '192.168.50.0/24',
  /** Pod i (1-based) lives at 10.180.0.(10+i). */
  podIP: (i: number): string => `10.180.0.${10 + i}`,
} as const;

export interface Pod {
  /** Its identity, as its servers answer it: "pod-1", "pod-2", ... */
  readonly name: string;
  /** Its network namespace. */
  readonly ns: string;
  readonly ip: string;
}

export interface Sandbox {
  readonly id: string;
  /** The node's namespace: the proxy runs and keeps its rules here. */
  readonly node: string;
  readonly client: string;
  readonly pods: readonly Pod[];
  readonly namespaces: readonly string[];
  /** Runs a kernel tool (by absolute path) inside namespace `ns`. */
  exec(ns: string, tool: string, args: readonly string[], input?: string): Promise<ExecResult>;
  /** Kills every process inside and deletes every namespace; safe to call twice. */
  destroy(): Promise<void>;
}

export interface RequiredTool {
  readonly tool: string;
  /** The Debian package that ships it. */
  readonly pkg: string;
}

export const requiredTools: readonly RequiredTool[] = [
  { tool: 'ip', pkg: 'iproute2' },
  { tool: 'iptables', pkg: 'iptables' },
  { tool: 'iptables-save', pkg: 'iptables' },
  { tool: 'iptables-restore', pkg: 'iptables' },
  { tool: 'nft', pkg: 'nftables' },
  // The iptables mode keeps its hairpin set in an ipset.
  { tool: 'ipset', pkg: 'ipset' },
  { tool: 'conntrack', pkg: 'conntrack' },
];

/**
 * Throws, naming what to install, when the machine cannot run kernel tests:
 * they need root and the standard netfilter tools. Never skip silently.
 */
export function requireKernelPrerequisites(tools: readonly RequiredTool[] = requiredTools): void {
  const problems: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    problems.push('kernel tests create network namespaces and must run as root (uid 0)');
  }
  const missing = tools.filter(({ tool }) => {
    try {
      accessSync(toolPath(tool), constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((m) => m.pkg))];
    problems.push(`missing tools: ${missing.map((m) => m.tool).join(', ')}; install them with: apt-get install -y ${pkgs.join(' ')}`);
  }
  if (problems.length > 0) throw new Error(`kernel test prerequisites not met: ${problems.join('; ')}`);
}

/** Runs a command to its end (with `env` if given); never rejects for a non-zero exit. */
export function runStatus(argv0: string, args: readonly string[], input?: string, env?: NodeJS.ProcessEnv): Promise<ExecResult & { code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv0, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.on('error', () => { /* reported through close */ });
    child.stdin.end(input ?? '');
  });
}

/** Runs a command and resolves with its output; rejects with stderr on failure. */
export async function run(argv0: string, args: readonly string[], input?: string): Promise<ExecResult> {
  const r = await runStatus(argv0, args, input);
  if (r.code !== 0) throw new Error(`${argv0} ${args.join(' ')} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

const ip = (args: readonly string[], input?: string) => run(toolPath('ip'), args, input);

export function nsExec(ns: string, tool: string, args: readonly string[], input?: string): Promise<ExecResult> {
  return ip(['netns', 'exec', ns, toolPath(tool), ...args], input);
}

async function listNamespaces(): Promise<string[]> {
  const { stdout } = await ip(['netns', 'list']);
  return stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.length > 0);
}

async function killAndDelete(ns: string): Promise<void> {
  // Kill first: a namespace with processes inside lives on after `ip netns del`.
  for (let attempt = 0; attempt < 20; attempt++) {
    const pids = await ip(['netns', 'pids', ns]).then((r) => r.stdout.split(/\s+/).filter(Boolean).map(Number), () => []);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await ip(['netns', 'del', ns]).catch(() => { /* already gone */ });
}

/** A new namespace named `<prefix>-<pid>-<random>` with its loopback up. */
export async function createNetns(prefix: string): Promise<string> {
  const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
  await ip(['netns', 'add', name]);
  await ip(['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

/** Kills what runs in the namespace and removes it (no error when it is gone). */
export function deleteNetns(name: string): Promise<void> {
  return killAndDelete(name);
}

/** Whether process `pid` exists (EPERM: it does, as another user's). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes namespaces with `prefix` whose owning process is gone (the leftovers
 * of a crashed run). Namespaces of live runs are left alone. Returns what it removed.
 */
export async function sweepLeftovers(prefix: string): Promise<string[]> {
  const re = new RegExp(`^${prefix}(\\d+)-`);
  const stale = (await listNamespaces()).filter((n) => {
    const m = re.exec(n);
    return m !== null && !alive(Number(m[1]));
  });
  for (const ns of stale) await killAndDelete(ns);
  return stale;
}

export interface SandboxOptions {
  /** Number of backend pods (default 3). */
  readonly pods?: number;
  /** Name prefix (default "kpt"); letters only. */
  readonly prefix?: string;
}

export async function createSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
  requireKernelPrerequisites();
  const prefix = opts.prefix ?? 'kpt';
  if (!/^[a-z]+$/.test(prefix)) throw new Error(`sandbox prefix must be lowercase letters: ${prefix}`);
  await sweepLeftovers(prefix);
  const id = `${prefix}${process.pid}-${randomBytes(3).toString('hex')}`;
  const node = `${id}-node`;
  const client = `${id}-client`;
  const pods: Pod[] = Array.from({ length: opts.pods ?? 3 }, (_, k) => ({
    name: `pod-${k + 1}`,
    ns: `${id}-pod${k + 1}`,
    ip: addresses.podIP(k + 1),
  }));
  const namespaces = [node, client, ...pods.map((p) => p.ns)];

  let destroyed = false;
  const sandbox: Sandbox = {
    id, node, client, pods, namespaces,
    exec: nsExec,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const ns of namespaces) await killAndDelete(ns);
    },
  };

  try {
    // One `ip -batch` per namespace keeps start-up to a few process starts.
    for (const ns of namespaces) await ip(['netns', 'add', ns]);
    const nodeBatch = [
      'link set lo up',
      'link add br0 type bridge',
      `addr add ${addresses.bridgeIP}/24 dev br0`,
      'link set br0 up',
      `link add vc0 type veth peer name eth0 netns ${client}`,
      `addr add ${addresses.nodeIP}/24 dev vc0`,
      'link set vc0 up',
      ...pods.flatMap((p, k) => [
        `link add vp${k + 1} type veth peer name eth0 netns ${p.ns}`,
        `link set vp${k + 1} master br0`,
        `link set vp${k + 1} up`,
      ]),
      // Locally generated packets to a Service VIP need a route to reach nat OUTPUT.
      `route add ${addresses.serviceCIDR} dev br0`,
    ];
    await ip(['-n', node, '-batch', '-'], nodeBatch.join('\n') + '\n');
    await ip(['-n', client, '-batch', '-'], [
      'link set lo up',
      `addr add ${addresses.clientIP}/24 dev eth0`,
      'link set eth0 up',
      `route add default via ${addresses.nodeIP}`,
    ].join('\n') + '\n');
    for (const p of pods) {
      await ip(['-n', p.ns, '-batch', '-'], [
        'link set lo up',
        `addr add ${p.ip}/24 dev eth0`,
        'link set eth0 up',
        `route add default via ${addresses.bridgeIP}`,
      ].join('\n') + '\n');
    }
    // /proc/sys/net belongs to the namespace of the process that opens it
    // (and sysctl(8) is not on every minimal machine). The kernel rate-limits
    // ICMP errors per destination (a burst of 6, then one a second); without
    // icmp_ratelimit=0 a test counting REJECTed connections would see timeouts.
    await nsExec(node, 'sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward && echo 0 > /proc/sys/net/ipv4/icmp_ratelimit']);
  } catch (e) {
    await sandbox.destroy();
    throw e;
  }
  return sandbox;
}
