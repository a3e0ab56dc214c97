// Picks the backend for --proxy-mode. Each mode exports a class with this
// constructor shape from modes/<mode>/backend.ts.
import type { Logger } from '../lib/log.ts';
import type { Backend, ModeOptions, ProxyMode } from './backend.ts';
import { IptablesBackend } from './iptables/backend.ts';
import { NftablesBackend } from './nftables/backend.ts';

export const proxyModes: readonly ProxyMode[] = ['iptables', 'nftables'];

export function createBackend(mode: ProxyMode, opts: ModeOptions, log: Logger): Backend {
  switch (mode) {
    case 'iptables':
      return new IptablesBackend(opts, log);
    case 'nftables':
      return new NftablesBackend(opts, log);
  }
}

/** Every mode other than `mode`, for removing another mode's rules at start-up. */
export function otherBackends(mode: ProxyMode, opts: ModeOptions, log: Logger): Backend[] {
  return proxyModes.filter((m) => m !== mode).map((m) => createBackend(m, opts, log));
}
