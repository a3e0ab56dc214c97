// Readers of what the kernel holds, for the rare moments a sync may read it
// (start-up, after a failed sync or detected drift, the periodic drift check,
// cleanup, `dump --live`): `ipvsadm -Sn`, `ip -o addr show`, `ipset save`
// and `iptables-save`. Never on an ordinary sync: those plan from the record.
import { canonicalIP, inCIDR, ipFamily } from '../../lib/net.ts';
import type { Family } from '../../proxy/model.ts';
import { parseIpvs, vsId, type IpvsProtocol, type ServiceKey, type ServiceSpec } from './ipvsadm.ts';
import { dummyDevice, setName } from './names.ts';
import { serverId, type NodeAddresses } from './state.ts';

export interface TableEntry {
  readonly key: ServiceKey;
  readonly spec: ServiceSpec;
  /** Real servers: serverId → weight. */
  readonly servers: Map<string, number>;
}

export interface IpvsTable {
  /** Virtual services kproxy can read (masquerading real servers only), by vsId. */
  readonly services: Map<string, TableEntry>;
  /** Ids of virtual services with lines kproxy does not write (direct routing, tunnels, ...): never touched. */
  readonly unreadable: Set<string>;
}

const protoOf: Readonly<Record<string, IpvsProtocol>> = { '-t': 'tcp', '-u': 'udp', '--sctp-service': 'sctp' };

/** The virtual service a raw ipvsadm -Sn line names, as vsId() writes it, without checking the rest. */
function rawId(line: string): string | undefined {
  const f = /^-[Aa] -f (\d+)( -6)?/.exec(line);
  if (f) return `fwm ${f[1]} ${f[2] ? 6 : 4}`;
  const m = /^-[Aa] (-t|-u|--sctp-service) (\S+)/.exec(line);
  return m ? `${protoOf[m[1]]} ${m[2]}` : undefined;
}

/** Reads `ipvsadm -Sn`. */
export function readIpvsTable(text: string): IpvsTable {
  const services = new Map<string, TableEntry>();
  const unreadable = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let cmd;
    try {
      cmd = parseIpvs(line);
    } catch {
      const id = rawId(line);
      if (id) {
        unreadable.add(id);
        services.delete(id);
      }
      continue;
    }
    const id = vsId(cmd.service);
    if (unreadable.has(id)) continue;
    if (cmd.object === 'service' && cmd.verb === 'add') {
      services.set(id, { key: cmd.service, spec: cmd.spec, servers: new Map() });
    } else if (cmd.object === 'server' && cmd.verb === 'add') {
      services.get(id)?.servers.set(serverId(cmd.server.address, cmd.server.port), cmd.weight);
    }
  }
  return { services, unreadable };
}

export interface AddressList {
  /** Addresses on kube-ipvs0. */
  readonly dummy: Set<string>;
  /** Every other address, per family, with its interface. */
  readonly other: readonly { readonly address: string; readonly device: string }[];
}

/** Reads `ip -o addr show`. */
export function readAddresses(text: string): AddressList {
  const dummy = new Set<string>();
  const other: { address: string; device: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\d+:\s+(\S+)\s+inet6? ([0-9a-fA-F.:]+)\/\d+/.exec(line);
    if (!m) continue;
    const device = m[1].replace(/@.*$/, '');
    if (ipFamily(m[2]) === 0) continue;
    if (device === dummyDevice) dummy.add(m[2]);
    else other.push({ address: m[2], device });
  }
  return { dummy, other };
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.');
}

function isLinkLocal6(ip: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(ip);
}

/**
 * The node's addresses outside kube-ipvs0, and the ones NodePorts answer on:
 * within --nodeport-addresses (every address when empty), never loopback or
 * IPv6 link-local.
 */
export function nodeAddresses(list: AddressList, nodePortCIDRs: readonly string[]): NodeAddresses {
  const local: Record<Family, string[]> = { 4: [], 6: [] };
  const nodePort: Record<Family, string[]> = { 4: [], 6: [] };
  for (const { address } of list.other) {
    const f = ipFamily(address) as Family;
    if (!local[f].includes(address)) local[f].push(address);
    if (isLoopback(address) || isLinkLocal6(address) || nodePort[f].includes(address)) continue;
    if (nodePortCIDRs.length > 0 && !nodePortCIDRs.some((c) => c.includes(':') === (f === 6) && inCIDR(address, c))) continue;
    nodePort[f].push(address);
  }
  return { local, nodePort };
}

export interface SetFacts {
  /** Every set name the kernel holds. */
  readonly names: Set<string>;
  /** Ports in the NodePort sets, per family and protocol ("4 tcp"). */
  readonly nodePorts: Map<string, Set<number>>;
  /** Firewall marks of the mark sets' members, by "SET ENTRY". */
  readonly marks: Map<string, number>;
}

/** Reads what ownership needs from `ipset save`: set names, NodePort ports, the marks' members. */
export function readSets(text: string): SetFacts {
  const names = new Set<string>();
  const nodePorts = new Map<string, Set<number>>();
  const marks = new Map<string, number>();
  const portSets = new Map<string, string>();
  for (const f of [4, 6] as const) {
    for (const [p, suffix] of [['tcp', 'TCP'], ['udp', 'UDP'], ['sctp', 'SCTP']] as const) {
      portSets.set(setName(`nodePort${suffix}`, f), `${f} ${p}`);
      portSets.set(setName(`nodePortLocal${suffix}`, f), `${f} ${p}`);
    }
  }
  const markSets = new Set([setName('fwmark', 4), setName('fwmark', 6)]);
  for (const line of text.split('\n')) {
    if (line.startsWith('create ')) {
      names.add(line.split(' ', 3)[1]);
      continue;
    }
    if (!line.startsWith('add ')) continue;
    const [, set, entry] = line.split(' ', 4);
    const which = portSets.get(set);
    if (which && /^\d+$/.test(entry)) {
      let s = nodePorts.get(which);
      if (!s) nodePorts.set(which, (s = new Set()));
      s.add(Number(entry));
    } else if (markSets.has(set)) {
      const m = / skbmark 0x([0-9a-f]+)/.exec(line);
      if (m) marks.set(`${set} ${entry}`, parseInt(m[1], 16));
    }
  }
  return { names, nodePorts, marks };
}

export interface SaveTables {
  /** "table chain" → rules (the text after `-A chain `), in order. */
  readonly chains: Map<string, string[]>;
}

/** Reads `iptables-save` output. */
export function readSave(text: string): SaveTables {
  const chains = new Map<string, string[]>();
  let table = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0];
      if (!chains.has(`${table} ${name}`)) chains.set(`${table} ${name}`, []);
    } else if (line.startsWith('-A ')) {
      const sp = line.indexOf(' ', 3);
      const chain = line.slice(3, sp);
      let list = chains.get(`${table} ${chain}`);
      if (!list) chains.set(`${table} ${chain}`, (list = []));
      list.push(line.slice(sp + 1));
    }
  }
  return { chains };
}

/** States of an IPVS connection that carries no more data (or a persistence template). */
const finished = new Set(['TIME_WAIT', 'CLOSE', 'CLOSED', 'NONE']);

function procAddress(text: string): string {
  if (/^[0-9A-F]{8}$/.test(text)) return [0, 2, 4, 6].map((i) => parseInt(text.slice(i, i + 2), 16)).join('.');
  return canonicalIP(text.includes(':') ? text : text.replace(/(.{4})(?!$)/g, '$1:'));
}

/**
 * Reads /proc/net/ip_vs_conn: the real servers (by serverId) that still have
 * a connection that may carry data (any state but TIME_WAIT, CLOSE and
 * persistence templates), among `wanted`.
 */
export function serversWithLiveConnections(text: string, wanted: ReadonlySet<string>): Set<string> {
  const live = new Set<string>();
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] === 'Pro') continue;
    const sid = serverId(procAddress(f[5]), parseInt(f[6], 16));
    if (wanted.has(sid) && !finished.has(f[7])) live.add(sid);
  }
  return live;
}

export interface ServerCounts {
  readonly weight: number;
  readonly active: number;
  readonly inactive: number;
}

/** Reads `ipvsadm -Ln <one service>`: its real servers' weights and connection counts, by serverId. */
export function readServiceListing(text: string): Map<string, ServerCounts> {
  const out = new Map<string, ServerCounts>();
  for (const line of text.split('\n')) {
    const m = /^\s+-> (\[[^\]]+\]|[0-9.]+):(\d+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)/.exec(line);
    if (!m) continue;
    const address = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1];
    out.set(serverId(address, Number(m[2])), { weight: Number(m[3]), active: Number(m[4]), inactive: Number(m[5]) });
  }
  return out;
}
