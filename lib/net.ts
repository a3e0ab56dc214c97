// Address and CIDR helpers every part uses: families, host:port text,
// canonical IPv6 text, CIDR membership. No Kubernetes, no kernel syntax.
import { isIP } from 'node:net';

export type IPFamily = 4 | 6;

/**
 * 4 or 6 for a literal IP address, 0 for anything else. An IPv6 zone
 * ("fe80::1%eth0") counts as no address: no Service or endpoint carries
 * one and no kernel tool accepts it in a rule.
 */
export function ipFamily(ip: string): 0 | IPFamily {
  if (isDottedQuad(ip)) return 4;
  return ip.includes('%') || !ip.includes(':') ? 0 : isIP(ip) as 0 | IPFamily;
}

/**
 * An IPv4 address as net.isIP accepts it (four decimal parts of 0-255, no
 * leading zeros), without a regular expression: renderers check every
 * endpoint address of a full sync (100,000 at 10,000 Services).
 */
function isDottedQuad(ip: string): boolean {
  const n = ip.length;
  if (n < 7 || n > 15) return false;
  let parts = 0;
  let i = 0;
  for (;;) {
    const start = i;
    let v = 0;
    while (i < n && i - start < 3) {
      const c = ip.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
    }
    const len = i - start;
    if (len === 0 || v > 255 || (len > 1 && ip.charCodeAt(start) === 48)) return false;
    parts++;
    if (i === n) return parts === 4;
    if (parts === 4 || ip.charCodeAt(i) !== 46) return false;
    i++;
  }
}

/** 4 or 6 for a CIDR such as "10.0.0.0/8" or "2001:db8::/32", 0 when it is not one. */
export function cidrFamily(cidr: string): 0 | IPFamily {
  const slash = cidr.indexOf('/');
  if (slash < 0) return 0;
  const family = ipFamily(cidr.slice(0, slash));
  if (family === 0) return 0;
  const bits = cidr.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return 0;
  return Number(bits) <= (family === 4 ? 32 : 128) ? family : 0;
}

/** The addresses or CIDRs of one family (by their spelling: IPv6 text holds a colon). */
export function ofFamily(items: readonly string[], family: IPFamily): string[] {
  return items.filter((c) => c.includes(':') === (family === 6));
}

/** "ip:port", or "[ip]:port" for IPv6, as Go's net.JoinHostPort writes it. */
export function hostPort(ip: string, port: number | string): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** "ip/32" or "ip/128": the CIDR of one address. */
export function hostCIDR(ip: string): string {
  return ip.includes(':') ? `${ip}/128` : `${ip}/32`;
}

/** Canonical text of an address, as the kernel tools print it (IPv6 compressed, lowercase). */
export function canonicalIP(ip: string): string {
  if (!ip.includes(':')) return ip;
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

function ipToBig(ip: string): { v: bigint; bits: number } {
  if (!ip.includes(':')) return { v: ip.split('.').reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n), bits: 32 };
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return { v: groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n), bits: 128 };
}

/** Whether `ip` lies within `cidr` (a bare address is its own /32 or /128). */
export function inCIDR(ip: string, cidr: string): boolean {
  const [net, lenStr] = cidr.split('/');
  const a = ipToBig(ip);
  const b = ipToBig(net);
  if (a.bits !== b.bits) return false;
  const len = BigInt(Number(lenStr ?? a.bits));
  const shift = BigInt(a.bits) - len;
  return a.v >> shift === b.v >> shift;
}
