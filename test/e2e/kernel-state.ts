// Reads what the node namespace's kernel holds, independently of kproxy,
// to check which mode's state is present. `run` runs a command in the node
// namespace and resolves with its stdout (host or user-mode-linux alike).
import type { ProxyMode } from '../../modes/registry.ts';
import type { KernelSnapshot } from './env.ts';

export type NodeRun = (argv: readonly string[]) => Promise<string>;

const builtinChains = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** The IPVS mode's chains (its other state lives in IPVS, ipsets and kube-ipvs0). */
const ipvsChain = /^(KUBE-IPVS-[A-Z-]+|KUBE-NODE-PORT|KUBE-LOAD-BALANCER|KUBE-SOURCE-RANGES-FIREWALL)$/;

function chainOf(line: string): string {
  return line.startsWith(':') ? line.slice(1).split(' ')[0] : line.split(' ')[1];
}

function jumpOf(line: string): string | undefined {
  return / -j (\S+)/.exec(line)?.[1];
}

function isIpvsLine(line: string): boolean {
  return ipvsChain.test(chainOf(line)) || ipvsChain.test(jumpOf(line) ?? '');
}

/** iptables rules and user chains of the iptables mode (the sandbox starts with none; the IPVS mode's few chains are its own). */
export async function iptablesLeftovers(run: NodeRun, saveTool: string): Promise<string[]> {
  const text = await run([saveTool]);
  return text.split('\n').filter((l) => (l.startsWith('-A ') || (l.startsWith(':') && !builtinChains.has(chainOf(l)))) && !isIpvsLine(l));
}

/** nftables tables in the node, as "family name" (e.g. "ip nat", "ip kproxy"). */
export async function nftTables(run: NodeRun): Promise<string[]> {
  const text = await run(['nft', 'list', 'tables']);
  return text.split('\n').filter((l) => l.startsWith('table ')).map((l) => l.slice('table '.length).trim());
}

/** The IPVS mode's state: virtual servers, kube-ipvs0, its ipsets, its chains and their jumps. */
export async function ipvsLeftovers(run: NodeRun, saveTool: string): Promise<string[]> {
  const out: string[] = [];
  out.push(...(await run(['ipvsadm', '-Sn'])).split('\n').filter(Boolean));
  const links = await run(['ip', '-o', 'link', 'show']);
  if (/^\d+: kube-ipvs0[:@]/m.test(links)) out.push('link kube-ipvs0');
  // KUBE-LOOP-BACK is the iptables mode's set.
  out.push(...(await run(['ipset', 'list', '-n'])).split('\n').filter((n) => /^KUBE-/.test(n) && !/^KUBE-(6-)?LOOP-BACK$/.test(n)).map((n) => `set ${n}`));
  out.push(...(await run([saveTool])).split('\n').filter((l) => (l.startsWith('-A ') || l.startsWith(':')) && isIpvsLine(l)));
  return out;
}

/**
 * What the userspace mode leaves: Service addresses carrying kproxy's
 * metric (7717) or the kproxy0 device, sockets listening on the Service
 * range, and forwarder worker processes in the node namespace.
 */
export async function userspaceLeftovers(run: NodeRun): Promise<string[]> {
  const problems: string[] = [];
  const addrs = (await run(['ip', '-o', 'address', 'show'])).split('\n').filter((l) => /\bmetric 7717\b/.test(l) || /^\d+:\s+kproxy0\b/.test(l));
  if (addrs.length > 0) problems.push(`Service addresses left:\n${addrs.join('\n')}`);
  const listening = (await run(['ss', '-Hlntu'])).split('\n').filter((l) => /\s10\.96\.\d+\.\d+:\d+\s/.test(l));
  if (listening.length > 0) problems.push(`sockets listening on Service addresses:\n${listening.join('\n')}`);
  // The processes of this namespace (the shell's own namespace, named by ip netns identify), one command line each.
  const cmdlines = await run(['sh', '-c', 'for p in $(ip netns pids "$(ip netns identify $$)"); do tr "\\0" " " < /proc/$p/cmdline 2>/dev/null; echo; done']);
  const workers = cmdlines.split('\n').filter((l) => /worker\.ts\s*$/.test(l));
  if (workers.length > 0) problems.push(`forwarder worker processes left: ${workers.length}`);
  return problems;
}

const iptablesTableNames = new Set(['filter', 'nat', 'mangle', 'raw', 'security']);
export function isIptablesTable(familyAndName: string): boolean {
  return iptablesTableNames.has(familyAndName.split(' ')[1]);
}

/** What the node holds of `mode`, as a message ('' when nothing). */
export async function modeLeftovers(run: NodeRun, saveTool: string, mode: ProxyMode, before: KernelSnapshot): Promise<string> {
  switch (mode) {
    case 'iptables': {
      const left = await iptablesLeftovers(run, saveTool);
      return left.length === 0 ? '' : `iptables rules left after leaving iptables mode:\n${left.join('\n')}`;
    }
    case 'nftables': {
      // A check that can fail: the mode that ran had a table of its own.
      if (before.running === 'nftables' && !before.nftTables.some((tb) => !isIptablesTable(tb))) return `nftables mode had no table of its own: ${before.nftTables.join(', ')}`;
      const now = await nftTables(run);
      const left = now.filter((tb) => !isIptablesTable(tb));
      return left.length === 0 ? '' : `nftables tables left after leaving nftables mode: ${left.join(', ')}`;
    }
    case 'ipvs': {
      const left = await ipvsLeftovers(run, saveTool);
      return left.length === 0 ? '' : `IPVS state left after leaving ipvs mode:\n${left.slice(0, 40).join('\n')}`;
    }
    case 'userspace': {
      const left = await userspaceLeftovers(run);
      return left.length === 0 ? '' : `after leaving userspace mode: ${left.join('\n')}`;
    }
    default:
      throw new Error(`no leftovers check for mode ${mode}: add one in test/e2e/kernel-state.ts`);
  }
}
