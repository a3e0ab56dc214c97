// Client-address checks on the accept path (source ranges, node-local
// clients). lib/net.ts's inCIDR parses both sides into BigInts on every
// call; here a CIDR list is parsed once and an IPv4 client costs a few
// integer operations.
import { ipFamily } from '../../lib/net.ts';

/** The 32-bit value of a dotted IPv4 address, or -1 when it is not one. */
export function ipv4Value(ip: string): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      octet = octet * 10 + (c - 48);
      if (octet > 255) return -1;
      digits++;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + octet;
}

/** The eight 16-bit groups of an IPv6 address (a dotted IPv4 tail included). */
function ipv6Groups(ip: string): number[] {
  let text = ip;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = ipv4Value(tail);
    text = `${text.slice(0, lastColon + 1)}${Math.floor(v4 / 65536).toString(16)}:${(v4 % 65536).toString(16)}`;
  }
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = text.indexOf('::');
  if (gap < 0) return parse(text);
  const head = parse(text.slice(0, gap));
  const rest = parse(text.slice(gap + 2));
  return [...head, ...Array<number>(Math.max(0, 8 - head.length - rest.length)).fill(0), ...rest];
}

interface V4Range { base: number; mask: number }
interface V6Range { groups: number[]; bits: number }

/**
 * A parsed list of CIDRs; `has(ip)` answers membership. Single addresses
 * (a /32 or /128: a node's own addresses) are looked up in a hash set, so
 * thousands of them cost no more than one.
 */
export class AddressSet {
  private readonly v4: V4Range[] = [];
  private readonly v6: V6Range[] = [];
  private readonly v4Hosts = new Set<number>();
  private readonly v6Hosts = new Set<string>();

  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const [addr, len] = c.split('/');
      if (ipFamily(addr) === 4) {
        const bits = len === undefined ? 32 : Number(len);
        if (bits === 32) {
          this.v4Hosts.add(ipv4Value(addr));
          continue;
        }
        const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
        this.v4.push({ base: (ipv4Value(addr) & mask) >>> 0, mask });
      } else if (ipFamily(addr) === 6) {
        const bits = len === undefined ? 128 : Number(len);
        if (bits === 128) this.v6Hosts.add(ipv6Groups(addr).join(':'));
        else this.v6.push({ groups: ipv6Groups(addr), bits });
      }
    }
  }

  get size(): number {
    return this.v4.length + this.v6.length + this.v4Hosts.size + this.v6Hosts.size;
  }

  has(ip: string): boolean {
    if (!ip.includes(':')) {
      const v = ipv4Value(ip);
      return v >= 0 && (this.v4Hosts.has(v) || this.v4.some((r) => ((v & r.mask) >>> 0) === r.base));
    }
    if (ip.startsWith('::ffff:') && ip.includes('.') && this.has(ip.slice(7))) return true;
    if (this.v6.length === 0 && this.v6Hosts.size === 0) return false;
    const g = ipv6Groups(ip);
    if (this.v6Hosts.has(g.join(':'))) return true;
    return this.v6.some((r) => {
      for (let i = 0, left = r.bits; left > 0; i++, left -= 16) {
        const mask = left >= 16 ? 0xffff : (0xffff << (16 - left)) & 0xffff;
        if ((g[i] & mask) !== (r.groups[i] & mask)) return false;
      }
      return true;
    });
  }
}
