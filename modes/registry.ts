// The one list of kproxy's modes. Everything mode-specific the core needs
// (flags, config blocks, tools, metrics, cleanup, diff, the behaviour
// tests) comes from these descriptors; adding a mode is a folder under
// modes/ plus one line here.
import type { ModeDescriptor } from './backend.ts';
import { iptablesMode } from './iptables/mode.ts';
import { ipvsMode } from './ipvs/mode.ts';
import { nftablesMode } from './nftables/mode.ts';
import { userspaceMode } from './userspace/mode.ts';

export const modes: readonly ModeDescriptor[] = [iptablesMode, nftablesMode, ipvsMode, userspaceMode];

/** The name of a registered mode (--proxy-mode). */
export type ProxyMode = string;

export const defaultMode = 'iptables';

export function modeNames(): string[] {
  return modes.map((m) => m.name);
}

/** The descriptor of `name`; throws for a name the registry does not hold (config validation comes first). */
export function modeOf(name: string): ModeDescriptor {
  const m = modes.find((x) => x.name === name);
  if (!m) throw new Error(`no proxy mode "${name}" (known: ${modeNames().join(', ')})`);
  return m;
}

/** Every mode other than `name`, for removing another mode's state after a mode switch. */
export function otherModes(name: string): ModeDescriptor[] {
  return modes.filter((m) => m.name !== name);
}
