// Node-wide settings for a backend, from the validated config and this
// node's addresses.
//
// IP families: IPv4 always; IPv6 as well when a cluster CIDR, one of the
// Node object's addresses or a Service's clusterIP in the initial list is
// IPv6 — and, when the kernel is to be touched, the mode's IPv6 tools are
// installed (without them IPv6 is skipped with a warning). A single-stack
// IPv6 cluster therefore programs an (empty) IPv4 side too, which is harmless.
import { accessSync, constants } from 'node:fs';
import type { ModeOptions } from '../modes/backend.ts';
import { modeOf, type ProxyMode } from '../modes/registry.ts';
import { toolPath, type Exec } from '../lib/exec.ts';
import { KproxyError } from '../lib/errors.ts';
import type { ProxyConfig } from './config.ts';
import { cidrFamily } from '../lib/net.ts';
import type { Logger } from '../lib/log.ts';
import type { Family } from './model.ts';
import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';

export function hasTool(tool: string): boolean {
  try {
    accessSync(toolPath(tool), constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface FamilyInput {
  readonly clusterCIDRs: readonly string[];
  readonly nodeIPs: readonly string[];
  readonly mode: ProxyMode;
  /** Addresses of the Services in the initial list (clusterIPs): an IPv6 one turns IPv6 on. */
  readonly serviceIPs?: readonly string[];
  /** Check that the kernel tools for IPv6 exist (false for dump, which touches no kernel). */
  readonly checkTools: boolean;
}

export function ipFamilies(input: FamilyInput, log?: Logger): Family[] {
  const wantsV6 = input.clusterCIDRs.some((c) => cidrFamily(c) === 6) || input.nodeIPs.some((ip) => isIP(ip) === 6) ||
    (input.serviceIPs ?? []).some((ip) => isIP(ip) === 6);
  if (!wantsV6) return [4];
  const missing = input.checkTools ? missingTools(input.mode, 6) : [];
  if (missing.length > 0) {
    log?.warn({ missing }, `IPv6 cluster CIDR or node address, but ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not installed: programming IPv4 only`);
    return [4];
  }
  return [4, 6];
}

/** The kernel tools `mode` needs for `family` that are not installed. */
export function missingTools(mode: ProxyMode, family: Family): string[] {
  return modeOf(mode).tools(family).filter((t) => !hasTool(t));
}

/** Stops start-up when the mode's IPv4 tools are missing: nothing could be programmed. */
export function requireTools(mode: ProxyMode): void {
  const missing = missingTools(mode, 4);
  if (missing.length > 0) {
    throw new KproxyError('KPROXY_SYNC_FAILED', `--proxy-mode ${mode} needs ${missing.join(', ')}, which ${missing.length === 1 ? 'is' : 'are'} not installed (install the distribution's package that ships ${missing.length === 1 ? 'it' : 'them'})`);
  }
}

/** Families for commands that read or remove kernel state without a source (dump --live, --cleanup). */
export function kernelFamilies(config: ProxyConfig, mode: ProxyMode): Family[] {
  if (config.clusterCIDRs.length > 0) return ipFamilies({ clusterCIDRs: config.clusterCIDRs, nodeIPs: [], mode, checkTools: true });
  return missingTools(mode, 6).length > 0 ? [4] : [4, 6];
}

export function modeOptions(config: ProxyConfig, families: readonly Family[], nodeIPs: readonly string[], exec: Exec | undefined, log?: Logger): ModeOptions {
  let nodePortAddresses: readonly string[] = config.nodePortAddresses;
  if (config.nodePortPrimary) {
    nodePortAddresses = nodeIPs.filter((ip) => families.includes(isIP(ip) as Family)).map((ip) => (isIP(ip) === 6 ? `${ip}/128` : `${ip}/32`));
    if (nodePortAddresses.length === 0) log?.warn('--nodeport-addresses primary, but the Node object has no addresses: NodePorts answer on every local address');
  }
  return Object.freeze({
    families: Object.freeze([...families]),
    clusterCIDRs: config.clusterCIDRs,
    masqueradeAll: config.masqueradeAll,
    nodePortAddresses: Object.freeze([...nodePortAddresses]),
    masqueradeBit: config.masqueradeBit,
    settings: config.modeSettings,
    exec,
  });
}

/**
 * Where healthCheckNodePort servers listen, as kube-proxy does: every address
 * without --nodeport-addresses (undefined); else this node's addresses within
 * those CIDRs (local interfaces), or the Node object's addresses for "primary".
 */
export function healthCheckHosts(config: ProxyConfig, nodeIPs: readonly string[], localIPs: readonly string[] = localAddresses()): string[] | undefined {
  if (config.nodePortPrimary) return nodeIPs.length > 0 ? [...nodeIPs] : undefined;
  if (config.nodePortAddresses.length === 0) return undefined;
  const allowed = new BlockList();
  for (const cidr of config.nodePortAddresses) {
    const [addr, prefix] = cidr.split('/');
    allowed.addSubnet(addr, Number(prefix), isIP(addr) === 6 ? 'ipv6' : 'ipv4');
  }
  return localIPs.filter((ip) => allowed.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4'));
}

function localAddresses(): string[] {
  // Link-local IPv6 needs a scope to bind; NodePorts are not served there.
  return Object.values(networkInterfaces()).flat()
    .map((a) => a?.address ?? '')
    .filter((ip) => isIP(ip) !== 0 && !/^fe80:/i.test(ip));
}
