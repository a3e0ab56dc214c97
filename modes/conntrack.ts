// Deletes conntrack entries of UDP flows whose target went away, for every
// mode: without this, a UDP client keeps sending to a dead endpoint (or to a
// cached REJECT) for as long as its flow lives. Called after a successful sync.
import type { Logger } from '../lib/log.ts';
import type { Changes } from '../proxy/model.ts';
import { ToolError, type Exec } from '../lib/exec.ts';

/** conntrack exits 1 with this when nothing matched: not an error for us. */
const nothingDeleted = /0 flow entries have been deleted/;

/** Argument lists for every `conntrack -D` the changes call for, without duplicates. */
export function staleUdpCommands(changes: Changes): string[][] {
  const cmds = new Map<string, string[]>();
  const add = (family: 4 | 6, args: string[]): void => {
    const full = ['-D', '-f', family === 4 ? 'ipv4' : 'ipv6', '-p', 'udp', ...args];
    cmds.set(full.join(' '), full);
  };
  for (const s of changes.staleUdpServiceIPs) {
    add(s.family, ['--orig-dst', s.ip, '--orig-port-dst', String(s.port)]);
    if (s.nodePort) add(s.family, ['--orig-port-dst', String(s.nodePort)]);
  }
  for (const e of changes.staleUdpEndpoints) {
    for (const ip of e.serviceIPs) {
      add(e.family, ['--orig-dst', ip, '--orig-port-dst', String(e.servicePort), '--dst-nat', e.endpointIP]);
    }
    if (e.nodePort > 0) add(e.family, ['--orig-port-dst', String(e.nodePort), '--dst-nat', e.endpointIP]);
  }
  return [...cmds.values()];
}

/**
 * Runs the deletions a few at a time (each is one netlink dump+delete in
 * the kernel; running them all at once only adds contention). Failures are
 * logged, not thrown: a failed cleanup must not fail the sync that succeeded.
 */
export async function clearStaleUdp(changes: Changes, exec: Exec, log: Logger): Promise<void> {
  const cmds = staleUdpCommands(changes);
  if (cmds.length === 0) return;
  const t0 = performance.now();
  let next = 0;
  let failed = 0;
  const worker = async (): Promise<void> => {
    while (next < cmds.length) {
      const args = cmds[next++];
      try {
        await exec('conntrack', args);
      } catch (e) {
        if (e instanceof ToolError && e.status === 1 && nothingDeleted.test(e.stderr)) continue;
        failed++;
        log.warn({ err: e, args: args.join(' ') }, 'conntrack cleanup of a stale UDP flow failed');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, cmds.length) }, worker));
  log.debug({ commands: cmds.length, failed, ms: Math.round(performance.now() - t0) }, 'cleared stale UDP conntrack entries');
}
