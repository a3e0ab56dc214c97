// `kproxy --cleanup`: removes everything every mode owns, and nothing else,
// in both IP families. Every mode is tried even when one fails.
import { hostExec, type Exec } from '../../lib/exec.ts';
import { modes } from '../../modes/registry.ts';
import type { ProxyConfig } from '../config.ts';
import { KproxyError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { kernelFamilies, modeOptions } from '../mode-options.ts';

export async function cleanupCommand(config: ProxyConfig, log: Logger, exec: Exec = hostExec): Promise<number> {
  const failed: string[] = [];
  for (const { name: mode, cleanup, unsupported } of modes) {
    try {
      const why = await unsupported?.(exec);
      if (why) {
        log.info({ mode, why }, 'this kernel cannot run this mode: nothing of it to remove');
        continue;
      }
      await cleanup(modeOptions(config, kernelFamilies(config, mode), [], exec, log), log);
      log.info({ mode }, 'removed this mode\'s rules');
    } catch (err) {
      log.error({ err, mode }, 'cleanup failed');
      failed.push(`${mode}: ${(err as Error).message}`);
    }
  }
  if (failed.length > 0) throw new KproxyError('KPROXY_CLEANUP_FAILED', failed.join('; '));
  return 0;
}
