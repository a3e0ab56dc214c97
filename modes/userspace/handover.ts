// Restart without a failed connection: the old kproxy keeps accepting
// until a successor has bound the same listeners beside it (SO_REUSEPORT),
// then stops accepting (with net.ipv4.tcp_migrate_req=1 the kernel moves
// connections queued on its listeners to the successor's) and drains.
// Whether the successor is there is read from the kernel's socket tables:
// every listener's address and port shows a listening socket that none of
// this kproxy's processes holds.
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { canonicalIP } from '../../lib/net.ts';

/** "10.96.0.10:80"-style key of a local address as /proc/net/{tcp,udp}[6] writes it. */
function procAddress(hex: string): string {
  const [addr, port] = hex.split(':');
  const p = parseInt(port, 16);
  if (addr.length === 8) {
    const v = parseInt(addr, 16);
    // One 32-bit word in host (little-endian) order.
    return `${v & 255}.${(v >>> 8) & 255}.${(v >>> 16) & 255}.${v >>> 24}:${p}`;
  }
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) {
    const word = addr.slice(w * 8, w * 8 + 8);
    const bytes = [6, 4, 2, 0].map((i) => word.slice(i, i + 2)).join('');
    groups.push(String(parseInt(bytes.slice(0, 4), 16).toString(16)), String(parseInt(bytes.slice(4), 16).toString(16)));
  }
  return `[${groups.join(':')}]:${p}`;
}

/** The inodes of listening TCP sockets and unconnected UDP sockets per "PROTO/addr:port" (IPv6 uncompressed groups). */
export function boundSockets(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): Map<string, Set<string>> {
  const sockets = new Map<string, Set<string>>();
  const tables: [string, string, string][] = [['TCP', '/proc/net/tcp', '0A'], ['TCP', '/proc/net/tcp6', '0A'], ['UDP', '/proc/net/udp', '07'], ['UDP', '/proc/net/udp6', '07']];
  for (const [proto, path, listenState] of tables) {
    let text: string;
    try {
      text = read(path);
    } catch {
      continue;
    }
    let at = text.indexOf('\n') + 1;
    while (at > 0 && at < text.length) {
      const end = text.indexOf('\n', at);
      const line = text.slice(at, end < 0 ? text.length : end);
      at = end < 0 ? -1 : end + 1;
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== listenState) continue;
      // A UDP listener is unconnected: its remote address is all zeros.
      if (proto === 'UDP' && !/^0+:0+$/.test(f[2])) continue;
      const key = `${proto}/${procAddress(f[1])}`;
      let set = sockets.get(key);
      if (set === undefined) sockets.set(key, (set = new Set()));
      set.add(f[9]);
    }
  }
  return sockets;
}

/** The inodes of every socket the processes `pids` hold open. */
export function socketInodes(pids: readonly number[]): Set<string> {
  const inodes = new Set<string>();
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  }
  return inodes;
}

/** The same spelling for a listener key, so it can be looked up in boundSockets(). */
export function procKey(protocol: string, ip: string, port: number): string {
  if (!ip.includes(':')) return `${protocol}/${ip}:${port}`;
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${protocol}/[${groups.map((g) => parseInt(g, 16).toString(16)).join(':')}]:${port}`;
}

/** True when every listener `keys` names has a bound socket that is not one of `ours`: a successor is ready. */
export function successorReady(keys: readonly string[], bound: ReadonlyMap<string, ReadonlySet<string>>, ours: ReadonlySet<string>): boolean {
  if (keys.length === 0) return false;
  for (const key of keys) {
    const inodes = bound.get(key);
    if (inodes === undefined || ![...inodes].some((i) => !ours.has(i))) return false;
  }
  return true;
}

/**
 * Sets net.ipv4.tcp_migrate_req in this network namespace, so closing a
 * listener hands its queued connections to another in its SO_REUSEPORT
 * group instead of resetting them. Returns an error text when it cannot.
 */
export function enableMigrateReq(): string | undefined {
  try {
    if (readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').trim() !== '1') writeFileSync('/proc/sys/net/ipv4/tcp_migrate_req', '1\n');
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * How many sockets of this network namespace use one of `addresses` as
 * their local address (TCP in any state but TIME_WAIT, UDP bound or
 * connected): a userspace kproxy still serving or draining on them.
 */
export function socketsOn(addresses: ReadonlySet<string>, read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number {
  let n = 0;
  for (const [path, proto] of [['/proc/net/tcp', 'TCP'], ['/proc/net/tcp6', 'TCP'], ['/proc/net/udp', 'UDP'], ['/proc/net/udp6', 'UDP']]) {
    let text: string;
    try {
      text = read(path);
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || (proto === 'TCP' && f[3] === '06')) continue;
      const local = procAddress(f[1]);
      const ip = local.startsWith('[') ? canonicalIP(local.slice(1, local.lastIndexOf(']'))) : local.slice(0, local.lastIndexOf(':'));
      if (addresses.has(ip)) n++;
    }
  }
  return n;
}
