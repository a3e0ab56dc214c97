// `kproxy diff`: the rules kproxy would program for the source against the
// rules the kernel holds, as a unified-style line diff. Exit 0 when equal,
// 1 when they differ.
//
// The two sides must be in the same form. A mode's batch (what dump prints)
// and the kernel's listing differ in syntax and order, so the desired side is
// produced the way the kernel would hold it: a full sync of the desired state
// into a fresh, empty network namespace, read back with the same
// readKernel(). Differences are then real drift, not formatting. Creating
// the scratch namespace needs CAP_SYS_ADMIN (root on the node).
import { randomBytes } from 'node:crypto';
import type { Backend, ModeOptions } from '../../modes/backend.ts';
import { hostExec, netnsExec, type Exec } from '../../lib/exec.ts';
import { modeOf, type ProxyMode } from '../../modes/registry.ts';
import { syncBackend } from '../../modes/sync.ts';
import type { ProxyConfig } from '../config.ts';
import { KproxyError } from '../../lib/errors.ts';
import { loadSource } from '../load-source.ts';
import type { Logger } from '../../lib/log.ts';
import { fullChanges, type NodeState } from '../model.ts';
import { modeOptions } from '../mode-options.ts';
import { unifiedDiff } from './line-diff.ts';
import type { Out } from './output.ts';

/** The listing in its mode's canonical form (nft prints set elements in kernel order), as lines. */
export function comparable(mode: ProxyMode, text: string): string[] {
  return modeOf(mode).normalizeListing(text).split('\n')
    .map((l) => l.replace(/\s+$/, '').replace(/^(:\S+ \S+) \[\d+:\d+\]$/, '$1'))
    .filter((l) => l !== '' && !l.startsWith('#'));
}

async function readKernelOf(backend: Backend, mode: ProxyMode): Promise<string> {
  if (!backend.readKernel) throw new KproxyError('KPROXY_KERNEL_READ_FAILED', `the ${mode} mode holds no kernel state to compare`);
  return backend.readKernel();
}

/** Full-syncs `state` into a scratch network namespace and reads it back as the kernel holds it. */
async function inScratchNamespace(mode: ProxyMode, opts: ModeOptions, state: NodeState, log: Logger): Promise<string> {
  const ns = `kproxy-diff-${process.pid}-${randomBytes(3).toString('hex')}`;
  try {
    await hostExec('ip', ['netns', 'add', ns]);
  } catch (err) {
    throw new KproxyError('KPROXY_KERNEL_READ_FAILED', `diff builds the desired rules in a scratch network namespace and could not create one (needs root / CAP_SYS_ADMIN): ${(err as Error).message}`, { cause: err });
  }
  try {
    // A namespace's loopback starts down; IPVS refuses real servers until it is up.
    await hostExec('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const backend = modeOf(mode).create({ ...opts, exec: netnsExec(ns) }, log);
    const r = await syncBackend(backend, state, fullChanges(state));
    if (!r.ok) throw new KproxyError('KPROXY_SYNC_FAILED', `the desired ${mode} rules do not load into an empty kernel: ${r.error?.message}`, { cause: r.error });
    return await readKernelOf(backend, mode);
  } finally {
    await hostExec('ip', ['netns', 'del', ns]).catch((err: unknown) => log.warn({ err, ns }, 'could not delete the scratch network namespace'));
  }
}

export async function diffCommand(config: ProxyConfig, log: Logger, out: Out, exec: Exec = hostExec): Promise<number> {
  const loaded = await loadSource(config, log, { watch: false, checkTools: true });
  const state = loaded.tracker.snapshot().state;
  await loaded.source.stop();
  const opts = modeOptions(config, loaded.families, loaded.nodeIPs, exec, log);
  const desired = comparable(config.mode, await inScratchNamespace(config.mode, opts, state, log));
  let kernel: string;
  try {
    kernel = await readKernelOf(modeOf(config.mode).create(opts, log), config.mode);
  } catch (err) {
    throw new KproxyError('KPROXY_KERNEL_READ_FAILED', `${config.mode}: ${(err as Error).message}`, { cause: err });
  }
  const actual = comparable(config.mode, kernel);
  const text = unifiedDiff(desired, actual, `desired (${config.mode}, ${config.sourceFile ?? 'cluster'})`, 'kernel');
  if (text === '') {
    await out(`kernel rules match the desired ${config.mode} rules (${desired.length} lines)\n`);
    return 0;
  }
  await out(text);
  return 1;
}
