// Which iptables variant the IPVS mode's few chains go into. As kube-proxy:
// the one already holding KUBE-* chains, else the system's `iptables`
// default when it works in this kernel, else the other (user-mode-linux's
// kernel, for one, has no nf_tables for IPv4). KPROXY_IPTABLES_VARIANT=nft|legacy
// overrides, as for the iptables mode.
import { KproxyError } from '../../lib/errors.ts';
import type { Exec } from '../../lib/exec.ts';

export type Variant = 'nft' | 'legacy';

async function save(exec: Exec, variant: Variant): Promise<string | undefined> {
  try {
    return (await exec(`iptables-${variant}-save`, ['-t', 'mangle'])).stdout;
  } catch {
    return undefined;
  }
}

export async function detectVariant(exec: Exec): Promise<Variant> {
  const forced = process.env.KPROXY_IPTABLES_VARIANT;
  if (forced === 'nft' || forced === 'legacy') return forced;
  if (forced) throw new KproxyError('KPROXY_IPTABLES_VARIANT', `KPROXY_IPTABLES_VARIANT must be "nft" or "legacy", got "${forced}"`);
  const [nft, legacy] = await Promise.all([save(exec, 'nft'), save(exec, 'legacy')]);
  const kube = (t: string | undefined): boolean => t !== undefined && /^:KUBE-/m.test(t);
  if (kube(nft) !== kube(legacy)) return kube(nft) ? 'nft' : 'legacy';
  let system: Variant = 'nft';
  try {
    system = /legacy/.test((await exec('iptables', ['--version'])).stdout) ? 'legacy' : 'nft';
  } catch {
    // no `iptables` alternative: decide by what works
  }
  const works = (v: Variant): boolean => (v === 'nft' ? nft : legacy) !== undefined;
  if (works(system)) return system;
  const other: Variant = system === 'nft' ? 'legacy' : 'nft';
  return works(other) ? other : system;
}
