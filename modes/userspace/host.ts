// Where the userspace backend's work happens. The real one: the Service
// addresses and the forwarder's sockets in the network namespace kproxy
// runs in. A backend whose tools run elsewhere (diff builds the desired
// state in a scratch namespace) keeps its listener table without opening
// sockets: a forwarder serves the namespace of its own process, never
// another. The fake dataplane of the shared tests is a third kind
// (fake.ts), registered against its exec.
import { hostExec, type Exec } from '../../lib/exec.ts';
import type { Logger } from '../../lib/log.ts';
import { unwrapExec } from '../fake.ts';
import { Forwarder, type ForwarderOptions } from './forwarder.ts';
import { TableForwarder, type ForwarderLike } from './table-forwarder.ts';

export interface Host {
  /** Runs `ip` where the Service addresses go. */
  readonly exec: Exec;
  /** `ip -o address show` and `ip -o link show` of the namespace the forwarder listens in. */
  listing(): Promise<{ addresses: string; links: string }>;
  startForwarder(log: Logger, opts: ForwarderOptions): Promise<ForwarderLike>;
  /** Whether this backend serves traffic itself (and so answers explain and runs the handover). */
  readonly live: boolean;
}

const fakes = new WeakMap<Exec, Host>();

/** A fake dataplane registers the Host a backend given its exec should use. */
export function registerFakeHost(exec: Exec, host: Host): void {
  fakes.set(exec, host);
}

const hostListing = async (): Promise<{ addresses: string; links: string }> => ({
  addresses: (await hostExec('ip', ['-o', 'address', 'show'])).stdout,
  links: (await hostExec('ip', ['-o', 'link', 'show'])).stdout,
});

export function hostFor(exec: Exec | undefined): Host {
  const fake = exec !== undefined ? fakes.get(unwrapExec(exec)) : undefined;
  // Tools go through the exec given (a test may record what they receive).
  if (fake !== undefined) return { ...fake, exec: exec! };
  if (exec === undefined || exec === hostExec) {
    return { exec: hostExec, listing: hostListing, live: true, startForwarder: (log, opts) => Forwarder.start(log, opts) };
  }
  // The node's addresses are this process's: the desired listeners are the ones kproxy would open here.
  return { exec, listing: hostListing, live: false, startForwarder: async () => new TableForwarder() };
}
