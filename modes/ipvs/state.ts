// What the IPVS mode believes the kernel holds: its record, kept by the
// backend after each accepted sync (modes/record.ts), or read from the
// kernel at start-up and after a failure (kernel-read.ts) so that a full
// sync adopts what is there instead of flushing it.
import type { Family } from '../../proxy/model.ts';
import { flatString } from '../../lib/flat-string.ts';
import { parseEntry, renderEntry, renderSkbMark, type IpsetCommand, type SetEntry, type SkbMark } from './ipset.ts';
import type { IpvsProtocol, ServiceKey, ServiceSpec } from './ipvsadm.ts';
import { setTypeOf } from './names.ts';

// The record is kept compact (at 10,000 Services × 10 endpoints it holds
// 100,000 real servers and 30,000 set members): a real server is its id and
// weight, a set member its id and count; what a line needs is read back
// from the id.

export interface VsState {
  readonly key: ServiceKey;
  /** The protocol of the service port it serves (firewall-mark services too). */
  readonly protocol: IpvsProtocol;
  readonly spec: ServiceSpec;
  /** Real servers: serverId() → weight. */
  readonly servers: ReadonlyMap<string, number>;
  /** Servers that drain (weight 0): serverId() → when they are deleted at the latest (epoch ms). */
  readonly drain?: ReadonlyMap<string, number>;
  /** The service port it serves; undefined while it drains without one (its port went away). */
  readonly owner?: string;
}

/** "address|port": a real server's id. */
export function serverId(address: string, port: number): string {
  return flatString(`${address}|${port}`);
}

export function serverOf(id: string): { address: string; port: number } {
  const i = id.lastIndexOf('|');
  return { address: id.slice(0, i), port: Number(id.slice(i + 1)) };
}

/** What one service port put into the kernel. */
export interface PortRecord {
  readonly vs: readonly string[];
  /** Set member ids ("SET ENTRY[ skbmark M]", memberId()). */
  readonly entries: readonly string[];
  /** Its addresses on kube-ipvs0. */
  readonly addrs: readonly string[];
  /** Its firewall mark, when it has one. */
  readonly fwmark?: number;
}


/** A set member's id: "SET ENTRY", and " skbmark VALUE/MASK" when it carries a mark. */
export function memberId(set: string, entry: SetEntry, skbmark?: SkbMark): string {
  return flatString(`${set} ${renderEntry(entry)}${skbmark ? ` skbmark ${renderSkbMark(skbmark)}` : ''}`);
}

/** The add (or del) line of a member, read back from its id. */
export function memberCommand(id: string, verb: 'add' | 'del', into?: string): IpsetCommand {
  const sp = id.indexOf(' ');
  const set = id.slice(0, sp);
  let rest = id.slice(sp + 1);
  let skbmark: SkbMark | undefined;
  const k = rest.indexOf(' skbmark ');
  if (k >= 0) {
    const [v, m] = rest.slice(k + 9).split('/');
    skbmark = { value: parseInt(v, 16), mask: m === undefined ? 0xffffffff : parseInt(m, 16) };
    rest = rest.slice(0, k);
  }
  const entry = parseEntry(rest, setTypeOf(set));
  const target = into ?? set;
  return verb === 'del' ? { verb, set: target, entry } : { verb, set: target, entry, ...(skbmark ? { skbmark } : {}) };
}

/** Addresses of the node outside kube-ipvs0, per family. */
export interface NodeAddresses {
  /** Every such address (a Service address among them stays off kube-ipvs0). */
  readonly local: Readonly<Record<Family, readonly string[]>>;
  /** The ones NodePorts answer on (--nodeport-addresses applied; no loopback, no IPv6 link-local). */
  readonly nodePort: Readonly<Record<Family, readonly string[]>>;
}

export interface IpvsRecord {
  readonly vs: Map<string, VsState>;
  readonly ports: Map<string, PortRecord>;
  /** Per set name: member id → the number of service ports that need it. */
  readonly sets: Map<string, Map<string, number>>;
  /** Addresses on kube-ipvs0, with the number of holders (service ports, draining virtual services). */
  readonly addrs: Map<string, number>;
  /** Firewall marks by service port key. */
  readonly fwmarks: Map<string, number>;
  /** Virtual services with draining real servers (or draining as a whole). */
  readonly draining: Set<string>;
  readonly nodeAddrs: NodeAddresses;
  /** Set names known to exist. */
  readonly setNames: Set<string>;
}

export function emptyRecord(nodeAddrs: NodeAddresses): IpvsRecord {
  return { vs: new Map(), ports: new Map(), sets: new Map(), addrs: new Map(), fwmarks: new Map(), draining: new Set(), nodeAddrs, setNames: new Set() };
}

/** What a full sync starts from when kproxy has no record: the kernel as read (kernel-read.ts). */
export interface KernelView {
  /** Virtual services kproxy owns, or that a desired one may adopt. */
  readonly vs: Map<string, VsState & { readonly foreign: boolean }>;
  readonly dummyExists: boolean;
  readonly dummyAddrs: ReadonlySet<string>;
  readonly nodeAddrs: NodeAddresses;
  readonly setNames: ReadonlySet<string>;
  /** Firewall marks found in the mark sets, by "SET ENTRY" (kept, so marks stay stable across restarts). */
  readonly marks: ReadonlyMap<string, number>;
}
