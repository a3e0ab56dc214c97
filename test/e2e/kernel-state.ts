// Reads what the node namespace's netfilter holds, independently of kproxy,
// to check which mode's rules are present.
import type { ProxyMode } from '../../modes/registry.ts';
import type { Sandbox } from '../helpers/netns.ts';

const builtinChains = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** Every iptables rule and user chain in the node (the sandbox starts with none). */
export async function iptablesLeftovers(sandbox: Sandbox): Promise<string[]> {
  const { stdout } = await sandbox.exec(sandbox.node, 'iptables-save', []);
  return stdout.split('\n').filter((l) => l.startsWith('-A ') || (l.startsWith(':') && !builtinChains.has(l.slice(1).split(' ')[0])));
}

/** nftables tables in the node, as "family name" (e.g. "ip nat", "ip kproxy"). */
export async function nftTables(sandbox: Sandbox): Promise<string[]> {
  const { stdout } = await sandbox.exec(sandbox.node, 'nft', ['list', 'tables']);
  return stdout.split('\n').filter((l) => l.startsWith('table ')).map((l) => l.slice('table '.length).trim());
}

export function otherMode(mode: ProxyMode): ProxyMode {
  return mode === 'iptables' ? 'nftables' : 'iptables';
}
