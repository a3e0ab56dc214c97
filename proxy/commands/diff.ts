// `kproxy diff`: desired rules (from the source) against what the kernel
// holds, as a unified-style line diff. Exit 0 when equal, 1 when they differ.
// Comment lines, blank lines and packet counters are not compared: the
// kernel tools print them differently from the batches kproxy sends.
import { hostExec, type Exec } from '../../modes/exec.ts';
import type { ProxyConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import { desiredRules, kernelRules } from './dump.ts';
import { unifiedDiff } from './line-diff.ts';
import type { Out } from './output.ts';

export function comparable(text: string): string[] {
  return text.split('\n')
    .map((l) => l.replace(/\s+$/, '').replace(/^(:\S+ \S+) \[\d+:\d+\]$/, '$1'))
    .filter((l) => l !== '' && !l.startsWith('#'));
}

export async function diffCommand(config: ProxyConfig, log: Logger, out: Out, exec: Exec = hostExec): Promise<number> {
  const desired = comparable(await desiredRules(config, log, exec));
  const actual = comparable(await kernelRules(config, log, exec));
  const text = unifiedDiff(desired, actual, `desired (${config.mode}, ${config.sourceFile ?? 'cluster'})`, 'kernel');
  if (text === '') {
    await out(`kernel rules match the desired ${config.mode} rules (${desired.length} lines)\n`);
    return 0;
  }
  await out(text);
  return 1;
}
