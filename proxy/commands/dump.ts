// `kproxy dump`: the rules a mode would program for the given objects
// (no root, no kernel), or with --live what the kernel holds now.
import { hostExec, type Exec } from '../../lib/exec.ts';
import { modeOf } from '../../modes/registry.ts';
import type { ProxyConfig } from '../config.ts';
import { KproxyError } from '../../lib/errors.ts';
import { loadSource } from '../load-source.ts';
import type { Logger } from '../../lib/log.ts';
import { kernelFamilies, modeOptions } from '../mode-options.ts';
import type { Out } from './output.ts';

/** The desired rules for the configured source, as the mode's full-sync batch. */
export async function desiredRules(config: ProxyConfig, log: Logger, exec: Exec): Promise<string> {
  const loaded = await loadSource(config, log, { watch: false, checkTools: false });
  try {
    const backend = modeOf(config.mode).create(modeOptions(config, loaded.families, loaded.nodeIPs, exec, log), log);
    return backend.render(loaded.tracker.snapshot().state);
  } finally {
    await loaded.source.stop();
  }
}

export async function kernelRules(config: ProxyConfig, log: Logger, exec: Exec): Promise<string> {
  const backend = modeOf(config.mode).create(modeOptions(config, kernelFamilies(config, config.mode), [], exec, log), log);
  if (!backend.readKernel) return `# the ${config.mode} mode holds no kernel state of its own\n`;
  try {
    return await backend.readKernel();
  } catch (err) {
    throw new KproxyError('KPROXY_KERNEL_READ_FAILED', `${config.mode}: ${(err as Error).message}`, { cause: err });
  }
}

export async function dumpCommand(config: ProxyConfig, log: Logger, out: Out, exec: Exec = hostExec): Promise<number> {
  await out(config.live ? await kernelRules(config, log, exec) : await desiredRules(config, log, exec));
  return 0;
}
