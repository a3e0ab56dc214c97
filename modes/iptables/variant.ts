// Which iptables variant to drive. As kube-proxy does: the one that already
// holds KUBE-* chains (so a node keeps one consistent ruleset), else the
// system's `iptables` default. KPROXY_IPTABLES_VARIANT=nft|legacy overrides.
import { KproxyError } from '../../lib/errors.ts';
import type { Exec } from '../../lib/exec.ts';
import type { Family } from '../../proxy/model.ts';

export type Variant = 'nft' | 'legacy';

export class VariantError extends KproxyError {
  constructor(message: string) {
    super('KPROXY_IPTABLES_VARIANT', message);
    this.name = 'VariantError';
  }
}

export function variantFromEnv(value: string | undefined): Variant | undefined {
  if (value === undefined || value === '') return undefined;
  if (value === 'nft' || value === 'legacy') return value;
  throw new VariantError(`KPROXY_IPTABLES_VARIANT must be "nft" or "legacy", got "${value}"`);
}

async function holdsKubeChains(exec: Exec, variant: Variant): Promise<boolean> {
  try {
    // mangle is small in every set-up and holds kube-proxy's and kubelet's canaries.
    const { stdout } = await exec(`iptables-${variant}-save`, ['-t', 'mangle']);
    return /^:KUBE-/m.test(stdout);
  } catch {
    return false;
  }
}

export async function detectVariant(exec: Exec): Promise<Variant> {
  const forced = variantFromEnv(process.env.KPROXY_IPTABLES_VARIANT);
  if (forced) return forced;
  const [nft, legacy] = await Promise.all([holdsKubeChains(exec, 'nft'), holdsKubeChains(exec, 'legacy')]);
  if (nft !== legacy) return nft ? 'nft' : 'legacy';
  const { stdout } = await exec('iptables', ['--version']);
  return /legacy/.test(stdout) ? 'legacy' : 'nft';
}

/** The tool name of one variant and family, e.g. ip6tables-nft-restore. */
export function tool(family: Family, variant: Variant, suffix: '' | '-save' | '-restore'): string {
  return `${family === 4 ? 'iptables' : 'ip6tables'}-${variant}${suffix}`;
}
