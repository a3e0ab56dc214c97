// What each IPVS scheduler does with a new connection, written from the
// kernel's own algorithms (net/netfilter/ipvs/ip_vs_*.c, Linux 6.1) so the
// fake kernel's tracer predicts the real choice: the hash schedulers (sh,
// dh, mh) pick exactly the server the kernel picks, the connection-count
// schedulers (lc, wlc, sed, nq) the least loaded ones, rr and wrr any
// server with a weight. test/ipvs-kernel-facts.test.ts compares these
// predictions with the kernel in user-mode-linux.
import { addressValue } from './checks.ts';
import type { Scheduler, SchedulerFlag } from './ipvsadm.ts';

/** A real server as a scheduler sees it, in the kernel's list order. */
export interface SchedServer {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** The last weight that was not 0 (the weight it was added with if never changed): mh keeps slots for drained servers. */
  readonly lastWeight: number;
  readonly active: number;
  readonly inactive: number;
}

export interface SchedPacket {
  readonly src: string;
  readonly srcPort: number;
  readonly dst: string;
}

export interface Choice {
  /** Servers a new connection may go to now (several when the scheduler rotates or counts tie). */
  readonly candidates: readonly SchedServer[];
  /** The one the kernel picks next, when it follows from the state alone (hash schedulers, counts). */
  readonly next?: SchedServer;
  /** Share of new connections per candidate over many connections (rr, wrr). */
  readonly shares?: readonly number[];
}

const available = (s: SchedServer): boolean => s.weight > 0;

// The kernel folds an IPv6 address to 32 bits by XOR of its words.
function fold(ip: string): number {
  const v = addressValue(ip);
  if (!ip.includes(':')) return Number(v);
  let x = 0n;
  for (let i = 0; i < 4; i++) x ^= (v >> BigInt(32 * i)) & 0xffffffffn;
  return Number(x);
}

const u32 = (x: number): number => x >>> 0;

// hash_32(val, bits): multiply by GOLDEN_RATIO_32, keep the top bits.
function hash32(value: number, bits: number): number {
  return Math.imul(value, 0x61c88647) >>> (32 - bits);
}

// ip_vs_sh / ip_vs_dh: a 256-bucket table filled by walking the server list.
const shBits = 8;
const shSize = 1 << shBits;

function shTable(servers: readonly SchedServer[], byWeight: boolean): (SchedServer | undefined)[] {
  const table: (SchedServer | undefined)[] = new Array(shSize);
  if (servers.length === 0) return table;
  let i = 0;
  let count = 0;
  for (let b = 0; b < shSize; b++) {
    table[b] = servers[i];
    // sh moves on after `weight` buckets (weight 0 still takes one); dh after one.
    if (!byWeight || ++count >= servers[i].weight) {
      i = (i + 1) % servers.length;
      count = 0;
    }
  }
  return table;
}

function shKey(addrFold: number, port: number, offset: number): number {
  return (offset + hash32(u32(port + addrFold), shBits)) & (shSize - 1);
}

function sourceHashing(servers: readonly SchedServer[], packet: SchedPacket, flags: readonly SchedulerFlag[]): SchedServer | undefined {
  const table = shTable(servers, true);
  const port = flags.includes('sh-port') ? packet.srcPort : 0;
  const addr = fold(packet.src);
  const first = table[shKey(addr, port, 0)];
  if (!first) return undefined;
  if (available(first)) return first;
  if (!flags.includes('sh-fallback')) return undefined;
  const ihash = shKey(addr, port, 0);
  for (let offset = 0; offset < shSize; offset++) {
    const d = table[shKey(addr, port, (offset + ihash) % shSize)];
    if (!d) break;
    if (available(d)) return d;
  }
  return undefined;
}

function destinationHashing(servers: readonly SchedServer[], packet: SchedPacket): SchedServer | undefined {
  const table = shTable(servers, false);
  const d = table[Number((BigInt(fold(packet.dst)) * 2654435761n) & BigInt(shSize - 1))];
  return d && available(d) ? d : undefined;
}

// ip_vs_mh: Maglev hashing over a table of 4093 slots (CONFIG_IP_VS_MH_TAB_INDEX 12),
// keyed by hsiphash (SipHash-1-3 on 64-bit kernels) with fixed keys.
const mhSize = 4093;
const mhBits = 6;
const mask64 = (1n << 64n) - 1n;
const rol = (x: bigint, b: bigint): bigint => ((x << b) | (x >> (64n - b))) & mask64;

function hsiphash32(value: number, k0: bigint, k1: bigint): number {
  let v0 = 0x736f6d6570736575n ^ k0;
  let v1 = 0x646f72616e646f6dn ^ k1;
  let v2 = 0x6c7967656e657261n ^ k0;
  let v3 = 0x7465646279746573n ^ k1;
  const round = (): void => {
    v0 = (v0 + v1) & mask64; v1 = rol(v1, 13n); v1 ^= v0; v0 = rol(v0, 32n);
    v2 = (v2 + v3) & mask64; v3 = rol(v3, 16n); v3 ^= v2;
    v0 = (v0 + v3) & mask64; v3 = rol(v3, 21n); v3 ^= v0;
    v2 = (v2 + v1) & mask64; v1 = rol(v1, 17n); v1 ^= v2; v2 = rol(v2, 32n);
  };
  const b = (4n << 56n) | BigInt(value >>> 0);
  v3 ^= b;
  round();
  v0 ^= b;
  v2 ^= 0xffn;
  round();
  round();
  round();
  return Number((v0 ^ v1 ^ v2 ^ v3) & 0xffffffffn);
}

const hash1 = 2654435761n;
const hash2 = 2654446892n;

function mhKey(addrFold: number, port: number, key: bigint, offset: number): number {
  return hsiphash32(u32(offset + port + addrFold), key, key);
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function mhTable(servers: readonly SchedServer[]): (SchedServer | undefined)[] {
  const table: (SchedServer | undefined)[] = new Array(mhSize);
  let g = 0;
  for (const s of servers) if (s.lastWeight > 0) g = g > 0 ? gcd(s.lastWeight, g) : s.lastWeight;
  if (g < 1) return table;
  const maxWeight = Math.max(...servers.map((s) => s.lastWeight));
  const shift = Math.max(0, (32 - Math.clz32(Math.floor(maxWeight / g))) - mhBits);
  const setup = servers.map((s) => {
    const addr = fold(s.address);
    const offset = mhKey(addr, s.port, hash1, 0) % mhSize;
    return {
      perm: offset,
      skip: (mhKey(addr, s.port, hash2, 0) % (mhSize - 1)) + 1,
      turns: (Math.floor(s.lastWeight / g) >> shift) || (s.lastWeight !== 0 ? 1 : 0),
    };
  });
  const taken = new Uint8Array(mhSize);
  let n = 0;
  let count = 0;
  for (;;) {
    for (let i = 0; i < servers.length;) {
      const ds = setup[i];
      if (ds.turns < 1) {
        i++;
        continue;
      }
      let c = ds.perm;
      while (taken[c]) {
        ds.perm += ds.skip;
        if (ds.perm >= mhSize) ds.perm -= mhSize;
        c = ds.perm;
      }
      taken[c] = 1;
      table[c] = servers[i];
      if (++n === mhSize) return table;
      if (++count >= ds.turns) {
        count = 0;
        i++;
      }
    }
  }
}

function maglev(servers: readonly SchedServer[], packet: SchedPacket, flags: readonly SchedulerFlag[]): SchedServer | undefined {
  const table = mhTable(servers);
  const port = flags.includes('mh-port') ? packet.srcPort : 0;
  const addr = fold(packet.src);
  const ihash = mhKey(addr, port, hash1, 0) % mhSize;
  const first = table[ihash];
  if (!first) return undefined;
  if (available(first)) return first;
  if (!flags.includes('mh-fallback')) return undefined;
  for (let offset = 0; offset < mhSize; offset++) {
    const d = table[mhKey(addr, port, hash1, (offset + ihash) % mhSize) % mhSize];
    if (!d) break;
    if (available(d)) return d;
  }
  return undefined;
}

// The least-loaded schedulers keep the first minimum in list order.
function least(servers: readonly SchedServer[], overhead: (s: SchedServer) => number, perWeight: boolean): Choice {
  const usable = servers.filter(available);
  if (usable.length === 0) return { candidates: [] };
  // Compare a/wa against b/wb as a*wb vs b*wa, as the kernel does.
  const cmp = (a: SchedServer, b: SchedServer): number =>
    perWeight ? overhead(a) * b.weight - overhead(b) * a.weight : overhead(a) - overhead(b);
  let best = usable[0];
  for (const s of usable.slice(1)) if (cmp(s, best) < 0) best = s;
  return { candidates: usable.filter((s) => cmp(s, best) === 0), next: best };
}

const connOverhead = (s: SchedServer): number => s.active * 256 + s.inactive;

/** Where a new connection of `packet` may go under `scheduler`, given the servers in the kernel's list order. */
export function schedule(scheduler: Scheduler, flags: readonly SchedulerFlag[], servers: readonly SchedServer[], packet: SchedPacket): Choice {
  switch (scheduler) {
    case 'rr': {
      const candidates = servers.filter(available);
      return { candidates, shares: candidates.map(() => 1 / candidates.length) };
    }
    case 'wrr': {
      const candidates = servers.filter(available);
      const total = candidates.reduce((a, s) => a + s.weight, 0);
      return { candidates, shares: candidates.map((s) => s.weight / total) };
    }
    case 'lc': {
      // lc skips weight 0 but otherwise ignores weights.
      return least(servers, connOverhead, false);
    }
    case 'wlc':
      return least(servers, connOverhead, true);
    case 'sed':
      return least(servers, (s) => s.active + 1, true);
    case 'nq': {
      const idle = servers.filter((s) => available(s) && s.active === 0);
      if (idle.length > 0) return { candidates: idle, next: idle[0] };
      return least(servers, (s) => s.active + 1, true);
    }
    case 'sh': {
      const d = sourceHashing(servers, packet, flags);
      return d ? { candidates: [d], next: d } : { candidates: [] };
    }
    case 'dh': {
      const d = destinationHashing(servers, packet);
      return d ? { candidates: [d], next: d } : { candidates: [] };
    }
    case 'mh': {
      const d = maglev(servers, packet, flags);
      return d ? { candidates: [d], next: d } : { candidates: [] };
    }
    case 'fo': {
      // Weighted failover: the first server of the highest weight.
      let best: SchedServer | undefined;
      for (const s of servers) if (available(s) && (!best || s.weight > best.weight)) best = s;
      return best ? { candidates: [best], next: best } : { candidates: [] };
    }
    case 'ovf': {
      // Weighted overflow: the highest-weight server whose active connections are below its weight.
      let best: SchedServer | undefined;
      for (const s of servers) if (available(s) && s.active < s.weight && (!best || s.weight > best.weight)) best = s;
      return best ? { candidates: [best], next: best } : { candidates: [] };
    }
    case 'lblc':
    case 'lblcr': {
      // Locality-based: a destination seen before keeps its server; a new one
      // gets the least loaded (weighted) server. The tracer does not keep the
      // kernel's per-destination table, so it names every server as possible.
      const wlc = least(servers, connOverhead, true);
      return { candidates: servers.filter(available), ...(wlc.next ? { next: wlc.next } : {}) };
    }
  }
}
