// How Service addresses reach the forwarder: each ClusterIP, externalIP and
// LoadBalancer IP the forwarder listens on is made a local address of the
// node, on a dummy interface `kproxy0` (as IPVS mode's kube-ipvs0) or, where
// the kernel has no dummy driver, on `lo`. Then the kernel delivers packets
// for them to the listeners bound there, from pods, from the node itself and
// from outside alike, with no packet rule at all. kproxy marks the
// addresses it owns with a route metric nobody else uses, so on `lo` it
// tells them from the administrator's and removes only its own.
// NodePorts need nothing here: they are bound on the node's own addresses.
import type { Exec } from '../../lib/exec.ts';
import { ToolError } from '../../lib/exec.ts';
import { ipFamily } from '../../lib/net.ts';
import type { Logger } from '../../lib/log.ts';

export const ADDRESS_DEVICE = 'kproxy0';
/** The metric that marks kproxy's addresses (a /32 or /128 has no prefix route for it to change). */
export const ADDRESS_METRIC = 7717;

const prefix = (ip: string): string => (ip.includes(':') ? `${ip}/128` : `${ip}/32`);

/** Owned addresses in `ip -o addr show` output: those carrying kproxy's metric. */
export function parseOwned(listing: string): string[] {
  const out: string[] = [];
  for (const line of listing.split('\n')) {
    const m = /\binet6? ([0-9a-fA-F.:]+)\/\d+ .*\bmetric (\d+)\b/.exec(line);
    if (m && Number(m[2]) === ADDRESS_METRIC) out.push(m[1]);
  }
  return out;
}

/** The `ip -batch` lines that take the owned set `have` to `want`. */
export function addressBatch(device: string, have: ReadonlySet<string>, want: ReadonlySet<string>): string[] {
  const lines: string[] = [];
  for (const ip of have) if (!want.has(ip)) lines.push(`address del ${prefix(ip)} dev ${device}`);
  for (const ip of want) {
    if (have.has(ip)) continue;
    // nodad: an IPv6 address must be usable (bindable) at once, not after duplicate detection.
    lines.push(`address replace ${prefix(ip)} dev ${device} metric ${ADDRESS_METRIC}${ip.includes(':') ? ' nodad' : ''}`);
  }
  return lines;
}

export class ServiceAddresses {
  readonly #exec: Exec;
  readonly #log: Logger;
  #device = '';
  /** What kproxy holds on the device now (read once at start-up, then kept). */
  #owned = new Set<string>();

  constructor(exec: Exec, log: Logger) {
    this.#exec = exec;
    this.#log = log;
  }

  /** The device holding the addresses (after setup()). */
  get device(): string {
    return this.#device;
  }

  get owned(): ReadonlySet<string> {
    return this.#owned;
  }

  /** Creates (or finds) kproxy0, falling back to lo; adopts the addresses a previous kproxy left. */
  async setup(): Promise<void> {
    this.#device = ADDRESS_DEVICE;
    try {
      await this.#exec('ip', ['link', 'add', ADDRESS_DEVICE, 'type', 'dummy']);
    } catch (e) {
      const text = e instanceof ToolError ? e.stderr : String(e);
      if (/File exists/i.test(text)) {
        // A previous kproxy's: reuse it.
      } else if (/Unknown device type|not supported/i.test(text)) {
        this.#device = 'lo';
        this.#log.info('the kernel has no dummy interface driver: Service addresses go on lo');
      } else throw e;
    }
    if (this.#device !== 'lo') await this.#exec('ip', ['link', 'set', ADDRESS_DEVICE, 'up']);
    const { stdout } = await this.#exec('ip', ['-o', 'address', 'show', 'dev', this.#device]);
    this.#owned = new Set(parseOwned(stdout));
  }

  /** Makes the owned addresses exactly `addresses`; one `ip -batch`. Resolves with what changed. */
  async sync(addresses: Iterable<string>): Promise<{ added: number; removed: number }> {
    const want = new Set<string>();
    for (const a of addresses) if (ipFamily(a) !== 0) want.add(a);
    const lines = addressBatch(this.#device, this.#owned, want);
    if (lines.length === 0) return { added: 0, removed: 0 };
    try {
      await this.#exec('ip', ['-batch', '-'], lines.join('\n') + '\n');
    } catch (e) {
      // Part of the batch may have gone through: read back what is there.
      const { stdout } = await this.#exec('ip', ['-o', 'address', 'show', 'dev', this.#device]);
      this.#owned = new Set(parseOwned(stdout));
      throw e;
    }
    const removed = [...this.#owned].filter((a) => !want.has(a)).length;
    const added = [...want].filter((a) => !this.#owned.has(a)).length;
    this.#owned = want;
    return { added, removed };
  }

  /** Removes every address kproxy owns, and kproxy0 itself. */
  async cleanup(): Promise<void> {
    if (this.#device === '') await this.setup();
    await this.sync([]);
    if (this.#device === ADDRESS_DEVICE) await this.#exec('ip', ['link', 'del', ADDRESS_DEVICE]).catch(() => undefined);
  }
}
