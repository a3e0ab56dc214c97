// The userspace mode as the core sees it: one entry of modes/registry.ts.
import type { Logger } from '../../lib/log.ts';
import type { ModeDescriptor, ModeOptions } from '../backend.ts';
import { parseListing } from './addresses.ts';
import { UserspaceBackend } from './backend.ts';
import { fakeUserspace } from './fake.ts';
import { socketsOn } from './handover.ts';
import { hostFor } from './host.ts';
import { userspaceSettings } from './settings.ts';

/** How long removing the addresses waits for a userspace kproxy still draining on them. */
const CLEANUP_WAIT_MS = 60_000;

/**
 * Removes kproxy's Service addresses and kproxy0. When the node is leaving
 * userspace mode, the old kproxy may still be handing over or draining
 * connections on those addresses: they go once no socket uses them (or
 * after a minute), so those connections finish.
 */
async function cleanup(opts: ModeOptions, log: Logger): Promise<void> {
  const host = hostFor(opts.exec);
  if (host.live) {
    const owned = new Set(parseListing((await host.exec('ip', ['-o', 'address', 'show'])).stdout).owned);
    const until = Date.now() + CLEANUP_WAIT_MS;
    let said = false;
    while (owned.size > 0 && socketsOn(owned) > 0 && Date.now() < until) {
      if (!said) log.info({ addresses: owned.size }, 'a userspace kproxy still has connections on its Service addresses: removing them once those end');
      said = true;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  await new UserspaceBackend(opts, log).cleanup();
}

export const userspaceMode: ModeDescriptor = {
  name: 'userspace',
  summary: 'kproxy forwards TCP and UDP itself: Service addresses made local, retries on another endpoint, passive health, draining',
  configBlock: 'userspace',
  settings: userspaceSettings,
  tools: () => ['ip'],
  kernelModules: [],
  metrics: {
    syncFailures: { name: 'kubeproxy_sync_proxy_rules_userspace_sync_failures_total', help: 'Cumulative proxy userspace forwarder sync failures' },
    owned: { name: 'kubeproxy_sync_proxy_rules_userspace_total', help: 'Listeners and Service addresses the userspace forwarder holds, per kind' },
  },
  create: (opts, log) => new UserspaceBackend(opts, log),
  cleanup,
  // readKernel() sorts its lines already.
  normalizeListing: (text) => text,
  fake: fakeUserspace,
  differences: { sourceIsNode: true, serviceAddressesLocal: true, unservedProtocols: ['SCTP'], needsProcess: true, resetAfterAccept: true },
};
