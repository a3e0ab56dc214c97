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
import { canonicalIP, ipFamily } from '../../lib/net.ts';
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

/** What `ip -o address show` says of the node: kproxy's addresses and device, and the node's own addresses. */
export interface AddressListing {
  /** Addresses carrying kproxy's metric (on kproxy0 or lo). */
  readonly owned: string[];
  /** Whether kproxy0 exists, and whether it is up. */
  readonly device: 'absent' | 'down' | 'up';
  /**
   * Every other address of the node (loopback included), canonical: where
   * NodePorts can listen. IPv6 link-local addresses are left out (a socket
   * cannot bind one without naming its interface).
   */
  readonly node: string[];
}

/** Reads one `ip -o address show` listing (and, with `links`, `ip -o link show`). */
export function parseListing(listing: string, links = ''): AddressListing {
  const owned: string[] = [];
  const node: string[] = [];
  let seen = false;
  for (const line of listing.split('\n')) {
    const m = /^\d+:\s+(\S+?)(?:@\S+)?\s+inet6? ([0-9a-fA-F.:]+)\/\d+(.*)$/.exec(line);
    if (!m) continue;
    const [, dev, ip, rest] = m;
    if (dev === ADDRESS_DEVICE) seen = true;
    const metric = /\bmetric (\d+)\b/.exec(rest);
    if (metric && Number(metric[1]) === ADDRESS_METRIC) owned.push(canonicalIP(ip));
    else if (dev !== ADDRESS_DEVICE && !/^fe[89ab]/i.test(ip) && !/\btentative\b|\bdadfailed\b/.test(rest)) node.push(canonicalIP(ip));
  }
  const link = new RegExp(`^\\d+:\\s+${ADDRESS_DEVICE}(?:@\\S+)?:\\s+<([^>]*)>`, 'm').exec(links);
  const device = link ? (/\bUP\b/.test(link[1]) ? 'up' : 'down') : seen ? 'up' : 'absent';
  return { owned, device, node: [...new Set(node)] };
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

  /**
   * Creates (or finds) kproxy0, falling back to lo; adopts the addresses a
   * previous kproxy left. Run again on every full sync: kproxy0 is made
   * again when someone deleted it (a kernel without the dummy driver is
   * not asked twice).
   */
  async setup(): Promise<void> {
    if (this.#device === 'lo') {
      const { stdout } = await this.#exec('ip', ['-o', 'address', 'show', 'dev', 'lo']);
      this.#owned = new Set(parseOwned(stdout).map(canonicalIP));
      return;
    }
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
    this.#owned = new Set(parseOwned(stdout).map(canonicalIP));
  }

  /** Someone else removed these: they are kproxy's no more, and the next change() adds them again. */
  gone(addresses: Iterable<string>): void {
    for (const a of addresses) this.#owned.delete(canonicalIP(a));
  }

  /**
   * Adds and removes some addresses (one `ip -batch`), leaving the others:
   * the incremental form of sync(). Adding one kproxy holds already, or
   * removing one it does not, is a no-op.
   */
  async change(add: Iterable<string>, remove: Iterable<string>): Promise<{ added: number; removed: number }> {
    const adding = new Set<string>();
    for (const a of add) if (ipFamily(a) !== 0 && !this.#owned.has(canonicalIP(a))) adding.add(canonicalIP(a));
    const removing = new Set<string>();
    for (const a of remove) if (ipFamily(a) !== 0 && this.#owned.has(canonicalIP(a)) && !adding.has(canonicalIP(a))) removing.add(canonicalIP(a));
    const lines = addressBatch(this.#device, removing, adding);
    if (lines.length === 0) return { added: 0, removed: 0 };
    await this.#send(lines);
    for (const a of removing) this.#owned.delete(a);
    for (const a of adding) this.#owned.add(a);
    return { added: adding.size, removed: removing.size };
  }

  /** Lines of `addressBatch`, sent as one `ip -batch`; on failure the owned set is read back. */
  async #send(lines: readonly string[]): Promise<void> {
    try {
      await this.#exec('ip', ['-batch', '-'], lines.join('\n') + '\n');
    } catch (e) {
      // Part of the batch may have gone through: read back what is there.
      const { stdout } = await this.#exec('ip', ['-o', 'address', 'show', 'dev', this.#device]);
      this.#owned = new Set(parseOwned(stdout).map(canonicalIP));
      throw e;
    }
  }

  /** Makes the owned addresses exactly `addresses`; one `ip -batch`. Resolves with what changed. */
  async sync(addresses: Iterable<string>): Promise<{ added: number; removed: number }> {
    const want = new Set<string>();
    for (const a of addresses) if (ipFamily(a) !== 0) want.add(canonicalIP(a));
    const lines = addressBatch(this.#device, this.#owned, want);
    if (lines.length === 0) return { added: 0, removed: 0 };
    await this.#send(lines);
    const removed = [...this.#owned].filter((a) => !want.has(a)).length;
    const added = [...want].filter((a) => !this.#owned.has(a)).length;
    this.#owned = want;
    return { added, removed };
  }

  /**
   * Removes every address kproxy owns (those on lo one by one; kproxy0
   * goes with its addresses), and creates nothing to do so.
   */
  async cleanup(): Promise<void> {
    const lines: string[] = [];
    for (const line of (await this.#exec('ip', ['-o', 'address', 'show'])).stdout.split('\n')) {
      const m = /^\d+:\s+(\S+?)(?:@\S+)?\s+inet6? ([0-9a-fA-F.:]+)\/\d+ .*\bmetric (\d+)\b/.exec(line);
      if (m && Number(m[3]) === ADDRESS_METRIC && m[1] !== ADDRESS_DEVICE) lines.push(`address del ${prefix(m[2])} dev ${m[1]}`);
    }
    if (lines.length > 0) await this.#exec('ip', ['-batch', '-'], lines.join('\n') + '\n');
    const links = (await this.#exec('ip', ['-o', 'link', 'show'])).stdout;
    if (new RegExp(`^\\d+:\\s+${ADDRESS_DEVICE}[:@]`, 'm').test(links)) await this.#exec('ip', ['link', 'del', ADDRESS_DEVICE]);
    this.#owned.clear();
  }
}
