// Restart without a failed connection: the old kproxy keeps accepting
// until a successor has bound the same listeners beside it (SO_REUSEPORT),
// then stops accepting (with net.ipv4.tcp_migrate_req=1 the kernel moves
// connections queued on its listeners to the successor's) and drains.
// Whether the successor is there is read from the kernel's socket tables:
// a listener it has bound shows up as one more socket on the same address
// and port than this kproxy holds.
import { readFileSync, writeFileSync } from 'node:fs';

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

/** Listening TCP sockets and unconnected UDP sockets per "PROTO/addr:port" (IPv6 uncompressed groups). */
export function boundSockets(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): Map<string, number> {
  const counts = new Map<string, number>();
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
      if (f.length < 4 || f[3] !== listenState) continue;
      // A UDP listener is unconnected: its remote address is all zeros.
      if (proto === 'UDP' && !/^0+:0+$/.test(f[2])) continue;
      const key = `${proto}/${procAddress(f[1])}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
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

/** True when, for every listener, more sockets are bound than `ours` holds: a successor is ready. */
export function successorReady(ours: ReadonlyMap<string, number>, bound: ReadonlyMap<string, number>): boolean {
  if (ours.size === 0) return false;
  for (const [key, n] of ours) if ((bound.get(key) ?? 0) <= n) return false;
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
