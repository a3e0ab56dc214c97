// Checks shared by the three typed batch models of the IPVS mode (ipvsadm,
// ipset, ip): every value is checked here before it may reach a batch line,
// so a hostile Service field can never add a word, an option or a line.
import { KproxyError } from '../../lib/errors.ts';
import { canonicalIP, ipFamily, type IPFamily } from '../../lib/net.ts';

export class IpvsSyntaxError extends KproxyError {
  constructor(message: string) {
    super('KPROXY_IPVS_INVALID', message);
    this.name = 'IpvsSyntaxError';
  }
}

/** JSON text of any value, short enough for an error message. */
export function show(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** An integer in [min, max] (rejects strings, NaN, fractions). */
export function checkInteger(what: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new IpvsSyntaxError(`invalid ${what} ${show(value)} (an integer from ${min} to ${max})`);
  }
  return value;
}

export function checkPort(what: string, value: unknown): number {
  return checkInteger(what, value, 1, 65535);
}

function ipv4Number(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

/**
 * A unicast host address in the kernel tools' canonical text (IPv6
 * compressed and lowercase): not unspecified, multicast, broadcast, an
 * IPv4-mapped IPv6 address or one with a zone. Returns its family.
 */
export function checkHostAddress(what: string, value: unknown): IPFamily {
  if (typeof value !== 'string') throw new IpvsSyntaxError(`invalid ${what} ${show(value)}`);
  const family = ipFamily(value);
  if (family === 0) throw new IpvsSyntaxError(`invalid ${what} ${show(value)} (not an IP address)`);
  const canonical = canonicalIP(value);
  if (canonical !== value) throw new IpvsSyntaxError(`${what} ${show(value)} is not in canonical form (${canonical})`);
  if (family === 4) {
    const n = ipv4Number(value);
    if (n === 0) throw new IpvsSyntaxError(`invalid ${what} ${value} (unspecified)`);
    if (n >= 0xe0000000 && n < 0xf0000000) throw new IpvsSyntaxError(`invalid ${what} ${value} (multicast)`);
    if (n === 0xffffffff) throw new IpvsSyntaxError(`invalid ${what} ${value} (broadcast)`);
  } else {
    if (value === '::') throw new IpvsSyntaxError(`invalid ${what} :: (unspecified)`);
    if (/^ff/.test(value)) throw new IpvsSyntaxError(`invalid ${what} ${value} (multicast)`);
    if (/^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/.test(value)) throw new IpvsSyntaxError(`invalid ${what} ${value} (IPv4-mapped)`);
  }
  return family;
}

/** A CIDR "address/length" whose address has no host bits set, in canonical text. Returns its family. */
export function checkNetwork(what: string, value: unknown): IPFamily {
  if (typeof value !== 'string') throw new IpvsSyntaxError(`invalid ${what} ${show(value)}`);
  const m = /^([^/]+)\/(\d{1,3})$/.exec(value);
  if (!m) throw new IpvsSyntaxError(`invalid ${what} ${show(value)} (address/length)`);
  const family = ipFamily(m[1]);
  if (family === 0) throw new IpvsSyntaxError(`invalid ${what} ${show(value)} (not an IP network)`);
  if (canonicalIP(m[1]) !== m[1]) throw new IpvsSyntaxError(`${what} ${show(value)} is not in canonical form (${canonicalIP(m[1])}/${m[2]})`);
  const bits = family === 4 ? 32 : 128;
  const length = Number(m[2]);
  if (length > bits || m[2] !== String(length)) throw new IpvsSyntaxError(`invalid ${what} ${show(value)} (prefix length)`);
  if (length === 0) throw new IpvsSyntaxError(`invalid ${what} ${value} (a /0 network is refused)`);
  if (networkOf(m[1], length) !== m[1]) throw new IpvsSyntaxError(`invalid ${what} ${value} (host bits set; ${networkOf(m[1], length)}/${length})`);
  return family;
}

function toBig(ip: string): { value: bigint; bits: number } {
  if (!ip.includes(':')) return { value: BigInt(ipv4Number(ip)), bits: 32 };
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return { value: groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n), bits: 128 };
}

function fromBig(value: bigint, bits: number): string {
  if (bits === 32) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.');
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  return canonicalIP(groups.join(':'));
}

/** The network address of `ip` under a prefix of `length` bits. */
export function networkOf(ip: string, length: number): string {
  const { value, bits } = toBig(ip);
  const shift = BigInt(bits - length);
  return fromBig((value >> shift) << shift, bits);
}

/** The address as an unsigned integer (32 or 128 bits), for ordering and hashing. */
export function addressValue(ip: string): bigint {
  return toBig(ip).value;
}

/** "ip:port", or "[ip]:port" for IPv6, as ipvsadm writes and reads them. */
export function ipvsHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Splits "ip:port" / "[ip]:port" (no checks beyond the shape). */
export function splitHostPort(text: string): { address: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (!m) throw new IpvsSyntaxError(`invalid address:port ${show(text)}`);
  return { address: m[1], port: Number(m[2]) };
}
