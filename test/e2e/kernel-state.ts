// Reads what the node namespace's netfilter holds, independently of kproxy,
// to check which mode's rules are present.
import { modes, type ProxyMode } from '../../modes/registry.ts';
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

/** Modes whose kernel tests run in network namespaces of this host (no kernel module the host may lack). */
export const hostModes: readonly ProxyMode[] = modes.filter((m) => m.kernelModules.length === 0).map((m) => m.name);

/** Another mode to switch to and back (the next one of the registry that runs on this host). */
export function otherMode(mode: ProxyMode): ProxyMode {
  const i = hostModes.indexOf(mode);
  return hostModes[(i + 1) % hostModes.length];
}
