// What the IPVS mode believes the kernel holds: its record, kept by the
// backend after each accepted sync (modes/record.ts), or read from the
// kernel at start-up and after a failure (kernel-read.ts) so that a full
// sync adopts what is there instead of flushing it.
import type { Family } from '../../proxy/model.ts';
import type { SetEntry, SkbMark } from './ipset.ts';
import type { IpvsProtocol, ServiceKey, ServiceSpec } from './ipvsadm.ts';

export interface ServerState {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** Set while the server drains (weight 0): when it is deleted at the latest (epoch ms). */
  readonly drainUntil?: number;
}

export interface VsState {
  readonly key: ServiceKey;
  /** The protocol of the service port it serves (firewall-mark services too). */
  readonly protocol: IpvsProtocol;
  readonly spec: ServiceSpec;
  /** Real servers by serverId(). */
  readonly servers: ReadonlyMap<string, ServerState>;
  /** The service port it serves; undefined while it drains without one (its port went away). */
  readonly owner?: string;
}

export function serverId(address: string, port: number): string {
  return `${address}|${port}`;
}

/** What one service port put into the kernel. */
export interface PortRecord {
  readonly vs: readonly string[];
  /** Set member ids ("SET ENTRY[ skbmark M]"). */
  readonly entries: readonly string[];
  /** Its addresses on kube-ipvs0. */
  readonly addrs: readonly string[];
  /** Its firewall mark, when it has one. */
  readonly fwmark?: number;
}

export interface SetMember {
  readonly set: string;
  readonly entry: SetEntry;
  readonly skbmark?: SkbMark;
  /** Service ports (and drained leftovers) that need it. */
  readonly count: number;
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
  /** Set members by id, per set name. */
  readonly sets: Map<string, Map<string, SetMember>>;
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
