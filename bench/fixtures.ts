// What the kernel benchmarks share: synthetic Services, a scratch network
// namespace, percentiles and the CPU time of the kernel tools they run.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { toolPath } from '../lib/exec.ts';
import { serviceKey, type Endpoint, type ServicePortState } from '../proxy/model.ts';
import { resolvePort } from '../proxy/port-decisions.ts';

export const ipv4 = (n: number): string => `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

export const endpoint = (ip: string): Endpoint => ({ ip, port: 8080, isLocal: false, ready: true, serving: true, terminating: false });

/** Service `i` of the benchmarks (bench/svc<i>:http, TCP port 80) at `clusterIP`. */
export function service(i: number, eps: Endpoint[], clusterIP: string): ServicePortState {
  const name = `bench/svc${i}:http`;
  return resolvePort({
    name, key: serviceKey(4, name, 'TCP'), namespace: 'bench', serviceName: `svc${i}`, portName: 'http', protocol: 'TCP', family: 4,
    clusterIP, port: 80, nodePort: 0, externalIPs: [], loadBalancerIPs: [], loadBalancerSourceRanges: [],
    healthCheckNodePort: 0, affinityTimeoutSeconds: 0, externalPolicyLocal: false, internalPolicyLocal: false,
  }, { clusterEndpoints: eps, localEndpoints: [], allReachableEndpoints: eps, hasEndpoints: eps.length > 0 });
}

/** The nearest-rank percentile `p` (0-100) of `xs`; NaN when empty. */
export function pct(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1))];
}

const ip = (args: string[]): string => execFileSync(toolPath('ip'), args).toString();

/** Runs `fn` with a fresh network namespace; kills what is left in it and removes it afterwards. */
export async function withNetns<T>(fn: (ns: string) => Promise<T>, prefix = 'kpx-bench'): Promise<T> {
  const ns = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
  ip(['netns', 'add', ns]);
  try {
    return await fn(ns);
  } finally {
    for (const pid of ip(['netns', 'pids', ns]).split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
    ip(['netns', 'del', ns]);
  }
}

/**
 * User and system CPU ms of this process's waited-for children: the kernel
 * tools (`ip netns exec` execs the tool in place). CPU time, unlike wall
 * time, stays meaningful on a machine shared with other work. Assumes
 * CLK_TCK=100.
 */
export function childrenCpu(): { user: number; system: number } {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[13]) * 10, system: Number(f[14]) * 10 };
}
