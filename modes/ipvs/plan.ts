// One sync of the IPVS mode, planned against the mode's record (or, when
// there is none, against the kernel as read at start-up): one `ipvsadm -R`
// batch, one `ipset restore`, one `ip -batch` and, on a full sync, one
// `iptables-restore --noflush` per family. A partial plan touches only the
// changed service ports' virtual services, set members and addresses; a
// full plan rewrites every set by swapping in a fresh copy and the chains by
// restoring them, and diffs the virtual services and addresses against what
// is there, so nothing is flushed. Pure: the record changes in commit() only.
import type { Changes, Family, NodeState, ServicePortState } from '../../proxy/model.ts';
import { inCIDR } from '../../lib/net.ts';
import type { Damage, Plan } from '../backend.ts';
import type { RepairSnapshot } from '../repairs.ts';
import { MapOverlay, type RecordMap } from '../record.ts';
import type { RefusedPort } from '../values.ts';
import { LineBatch } from './batch.ts';
import { ipLines, type IpCommand } from './ip-batch.ts';
import { ipsetLines, renderEntry, type IpsetCommand, type SetSpec } from './ipset.ts';
import { ipvsLines, isFwmark, type IpvsCommand, type Scheduler, type ServiceSpec } from './ipvsadm.ts';
import { type BuiltinJump, type Chain, type LayoutOptions, layoutChains } from './layout.ts';
import { dummyDevice, fwmarkOf, maxFwmarkId, setName, setRoles, setSpec } from './names.ts';
import { portWant, RefusedPortError, type PortContext, type WantedEntry, type WantedVs } from './service-port.ts';
import {
  memberCommand, serverId, serverOf, type IpvsRecord, type KernelView, type NodeAddresses, type PortRecord, type VsState,
} from './state.ts';

export interface PlanOptions {
  readonly families: readonly Family[];
  readonly layout: ReadonlyMap<Family, LayoutOptions>;
  readonly defaultScheduler: Scheduler;
  readonly missingSchedulers: ReadonlySet<string>;
  readonly masqueradeBit: number;
  /** --nodeport-addresses (empty: every address). */
  readonly nodePortCIDRs: readonly string[];
  /** How long a removed TCP/SCTP real server may drain at most. */
  readonly graceMs: number;
  readonly now: number;
}

/** What a full plan needs besides the record: fresh facts read from the kernel. */
export interface FullInputs {
  /** The kernel as read, when there is no record (start-up, after a failure or drift). */
  readonly kernel?: KernelView;
  readonly nodeAddrs: NodeAddresses;
  /** Jumps from built-in chains that are missing, per family. */
  readonly missingJumps: ReadonlyMap<Family, readonly BuiltinJump[]>;
  /** Set names that exist (a set is created only when missing). */
  readonly setNames: ReadonlySet<string>;
}

export type PortWarning = RefusedPort;

export interface IpvsPlan extends Plan {
  /** The `ipvsadm -R` batch ('' when there is nothing to send). */
  readonly ipvsadm: string;
  /** The `ipset restore` batch; run with -exist when `ipsetExist`. */
  readonly ipset: string;
  readonly ipsetExist: boolean;
  /** The `ip -batch -` batch. */
  readonly ip: string;
  /** The `iptables-restore --noflush` batch of each family (full plans only). */
  readonly iptables: ReadonlyMap<Family, string>;
  /** Lines per tool, for logs and benchmarks. */
  readonly counts: { readonly ipvsadm: number; readonly ipset: number; readonly ip: number; readonly iptables: number };
  /** The record once the kernel accepted the plan. */
  commit(): IpvsRecord;
  /** Changes others made that this (full) plan repairs; settled once applied. */
  readonly repairing?: RepairSnapshot<Damage>;
}

const none: readonly never[] = Object.freeze([]);

/** Scratch set for swapping a set's new content in (31 characters at most). */
export function scratchSet(family: Family, index: number): string {
  return `KUBE-IPVS-SWAP-${family}-${index}`;
}

function fnv(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function seedId(key: string): number {
  return (fnv(key) % (maxFwmarkId() - 1)) + 1;
}

/** The mark a service port gets unless another holds it: derived from its key, so stable across restarts and nodes. */
export function hashedFwmark(key: string, masqueradeBit: number): number {
  return fwmarkOf(seedId(key), masqueradeBit);
}

/** The address a virtual service holds on kube-ipvs0 while it drains without a port. */
function drainAddress(v: VsState, nodeAddrs: NodeAddresses): string | undefined {
  if (isFwmark(v.key)) return undefined;
  const f: Family = v.key.address.includes(':') ? 6 : 4;
  return nodeAddrs.local[f].includes(v.key.address) ? undefined : v.key.address;
}

function sameSpec(a: ServiceSpec, b: ServiceSpec): boolean {
  return a.scheduler === b.scheduler && a.persistence === b.persistence && (a.flags ?? none).join() === (b.flags ?? none).join();
}

function familyOfAddr(ip: string): Family {
  return ip.includes(':') ? 6 : 4;
}

/** The chains as the restore batch of one family writes them. */
export function restoreBatch(chains: readonly Chain[], missing: readonly BuiltinJump[]): string {
  const out: string[] = [];
  for (const table of ['mangle', 'nat', 'filter'] as const) {
    const mine = chains.filter((c) => c.table === table);
    const jumps = missing.filter((j) => j.table === table);
    if (!mine.length && !jumps.length) continue;
    out.push(`*${table}`);
    for (const c of mine) out.push(`:${c.name} - [0:0]`);
    // Inserted at the head, last first, so they keep their listed order.
    for (const j of [...jumps].reverse()) out.push(`-I ${j.from} 1 ${j.rule}`);
    for (const c of mine) for (const r of c.rules) out.push(`-A ${c.name} ${r}`);
    out.push('COMMIT');
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

export function planSync(state: NodeState, changes: Changes, record: IpvsRecord | undefined, o: PlanOptions, fullInputs: FullInputs | undefined): IpvsPlan {
  const full = record === undefined || changes.full;
  if (full && !fullInputs) throw new Error('a full IPVS plan needs what prepare() read from the kernel');
  const kernel = record ? undefined : fullInputs!.kernel;
  const nodeAddrs = full ? withNodeIPs(fullInputs!.nodeAddrs, state.nodeIPs, o.nodePortCIDRs) : record!.nodeAddrs;
  const ipvs = new LineBatch<IpvsCommand>(ipvsLines);
  const ipset = new LineBatch<IpsetCommand>(ipsetLines);
  const ipsetDels: IpsetCommand[] = [];
  const ipsetAdds: IpsetCommand[] = [];
  const ip = new LineBatch<IpCommand>(ipLines);
  const refused: RefusedPort[] = [];
  const warnings: PortWarning[] = [];

  const baseVs: Map<string, VsState> = record?.vs ?? (kernel?.vs as Map<string, VsState> | undefined) ?? new Map();
  const vs = new MapOverlay<string, VsState>(baseVs);
  const ports: RecordMap<string, PortRecord> = full ? new Map() : new MapOverlay(record!.ports);
  const fwmarks: RecordMap<string, number> = full ? new Map() : new MapOverlay(record!.fwmarks);
  const addrs: RecordMap<string, number> = full ? new Map() : new MapOverlay(record!.addrs);
  const draining = new Set(full ? none : record!.draining);
  const claimed = new Set<string>();
  const baseSets = full ? new Map<string, Map<string, number>>() : record!.sets;
  const sets = new Map<string, RecordMap<string, number>>();
  const setOf = (name: string): RecordMap<string, number> => {
    let m = sets.get(name);
    if (!m) {
      let base = baseSets.get(name);
      if (!base) baseSets.set(name, (base = new Map()));
      m = full ? base : new MapOverlay(base);
      sets.set(name, m);
    }
    return m;
  };
  /** Members whose presence may change (partial plans): their presence before this plan. */
  const touched = new Map<string, { set: string; before: boolean }>();
  const touchedAddrs = new Map<string, boolean>();

  // Firewall marks: a port keeps its mark; a new one takes the one the kernel
  // shows for its addresses, else one derived from its key (stable across
  // restarts and nodes), moved on while taken.
  const markOwner = new Map<number, string>();
  for (const [k, m] of fwmarks) markOwner.set(m, k);
  if (full && record) for (const [k, m] of record.fwmarks) if (state.services.has(k)) markOwner.set(m, k);
  /** A mark is free for `key` when no other port holds it and no virtual service of another port (or draining) uses it. */
  const markFree = (m: number, key: string): boolean => {
    const owner = markOwner.get(m);
    if (owner !== undefined && owner !== key) return false;
    for (const f of [4, 6]) {
      const v = vs.get(`fwm ${m} ${f}`);
      if (v && v.owner !== key) return false;
    }
    return true;
  };
  const pendingMarks = new Map<string, number>();
  const markFor = (key: string, hintIds: readonly string[]): number => {
    const kept = pendingMarks.get(key) ?? fwmarks.get(key) ?? (full ? record?.fwmarks.get(key) : undefined);
    if (kept !== undefined) return kept;
    for (const h of hintIds) {
      const m = kernel?.marks.get(h);
      // A virtual service the kernel holds for this mark is this port's to adopt.
      if (m !== undefined && (markOwner.get(m) ?? key) === key) return m;
    }
    let id = seedId(key);
    let mark = fwmarkOf(id, o.masqueradeBit);
    while (!markFree(mark, key)) {
      id = id >= maxFwmarkId() - 1 ? 1 : id + 1;
      mark = fwmarkOf(id, o.masqueradeBit);
    }
    return mark;
  };

  const ctxOf = new Map<Family, PortContext>();
  for (const f of o.families) {
    let currentKey = '';
    let currentHints: string[] = [];
    const ctx: PortContext & { prepare(key: string, hints: string[]): void } = {
      family: f,
      nodePortAddrs: nodeAddrs.nodePort[f],
      localAddrs: new Set(nodeAddrs.local[f]),
      defaultScheduler: o.defaultScheduler,
      missingSchedulers: o.missingSchedulers,
      masqueradeBit: o.masqueradeBit,
      fwmark: (key) => {
        const m = markFor(key, key === currentKey ? currentHints : []);
        pendingMarks.set(key, m);
        return m;
      },
      prepare(key, hints) {
        currentKey = key;
        currentHints = hints;
      },
    };
    ctxOf.set(f, ctx);
  }

  // Virtual services.
  const serverKey = (sid: string) => serverOf(sid);
  const addAll = (id: string, v: WantedVs, owner: string): void => {
    ipvs.addChecked({ verb: 'add', object: 'service', service: v.key, spec: v.spec });
    const servers = new Map<string, number>();
    for (const server of v.servers) {
      ipvs.addChecked({ verb: 'add', object: 'server', service: v.key, server, weight: 1 });
      servers.set(serverId(server.address, server.port), 1);
    }
    vs.set(id, { key: v.key, protocol: v.protocol, spec: v.spec, servers, owner });
  };
  /** Drains (TCP, SCTP) or deletes (UDP) the servers of `cur` that `keep` does not keep, into `servers` and `drain`. */
  const drainTo = (cur: VsState, keep: (sid: string) => boolean, servers: Map<string, number>, drain: Map<string, number>): void => {
    for (const [sid, weight] of cur.servers) {
      if (keep(sid)) continue;
      if (cur.protocol === 'udp') {
        // UDP has no connection to finish: removed at once (its conntrack entries go too).
        ipvs.addChecked({ verb: 'delete', object: 'server', service: cur.key, server: serverKey(sid) });
        continue;
      }
      if (weight > 0) ipvs.addChecked({ verb: 'edit', object: 'server', service: cur.key, server: serverKey(sid), weight: 0 });
      servers.set(sid, 0);
      drain.set(sid, cur.drain?.get(sid) ?? o.now + o.graceMs);
    }
  };
  const withDrain = (v: Omit<VsState, 'drain'>, drain: Map<string, number>): VsState => (drain.size ? { ...v, drain } : v);
  const reconcile = (v: WantedVs, owner: string): void => {
    claimed.add(v.id);
    const cur = vs.get(v.id);
    if (!cur) {
      addAll(v.id, v, owner);
      draining.delete(v.id);
      return;
    }
    if (!full && cur.owner === undefined) releaseDrainAddress(cur);
    if (!sameSpec(cur.spec, v.spec)) ipvs.addChecked({ verb: 'edit', object: 'service', service: v.key, spec: v.spec });
    const servers = new Map<string, number>();
    const drain = new Map<string, number>();
    for (const s of v.servers) {
      const sid = serverId(s.address, s.port);
      const w = cur.servers.get(sid);
      if (w === undefined) ipvs.addChecked({ verb: 'add', object: 'server', service: v.key, server: s, weight: 1 });
      // A server that comes back while it drains (or that a previous run left at weight 0) gets its weight back.
      else if (w !== 1) ipvs.addChecked({ verb: 'edit', object: 'server', service: v.key, server: s, weight: 1 });
      servers.set(sid, 1);
    }
    drainTo({ ...cur, key: v.key }, (sid) => servers.has(sid), servers, drain);
    vs.set(v.id, withDrain({ key: v.key, protocol: v.protocol, spec: v.spec, servers, owner }, drain));
    if (drain.size) draining.add(v.id);
    else draining.delete(v.id);
  };
  const gone = (id: string): void => {
    const cur = vs.get(id)!;
    const servers = new Map<string, number>();
    const drain = new Map<string, number>();
    drainTo(cur, () => false, servers, drain);
    if (servers.size === 0) {
      ipvs.addChecked({ verb: 'delete', object: 'service', service: cur.key });
      if (!full && cur.owner === undefined) releaseDrainAddress(cur);
      vs.delete(id);
      draining.delete(id);
      return;
    }
    const next = withDrain({ key: cur.key, protocol: cur.protocol, spec: cur.spec, servers }, drain);
    vs.set(id, next);
    draining.add(id);
    if (!full && cur.owner !== undefined) holdDrainAddress(next);
  };

  // Set members and addresses, counted.
  const inc = (e: WantedEntry): void => {
    const m = setOf(e.set);
    const n = m.get(e.id);
    if (!full && !touched.has(e.id)) touched.set(e.id, { set: e.set, before: n !== undefined });
    m.set(e.id, (n ?? 0) + 1);
  };
  const dec = (set: string, id: string): void => {
    const m = setOf(set);
    const n = m.get(id);
    if (n === undefined) return;
    if (!touched.has(id)) touched.set(id, { set, before: true });
    if (n <= 1) m.delete(id);
    else m.set(id, n - 1);
  };
  const incAddr = (a: string): void => {
    if (!full && !touchedAddrs.has(a)) touchedAddrs.set(a, addrs.has(a));
    addrs.set(a, (addrs.get(a) ?? 0) + 1);
  };
  const decAddr = (a: string): void => {
    const n = addrs.get(a);
    if (n === undefined) return;
    if (!touchedAddrs.has(a)) touchedAddrs.set(a, true);
    if (n <= 1) addrs.delete(a);
    else addrs.set(a, n - 1);
  };
  function holdDrainAddress(v: VsState): void {
    const a = drainAddress(v, nodeAddrs);
    if (a) incAddr(a);
  }
  function releaseDrainAddress(v: VsState): void {
    const a = drainAddress(v, nodeAddrs);
    if (a) decAddr(a);
  }

  // Each service port (all of them in a full plan).
  const keys = full ? state.services.keys() : changes.services.values();
  for (const key of keys) {
    const s = state.services.get(key);
    if (s && !o.families.includes(s.family)) continue;
    const old = full ? undefined : ports.get(key);
    let want: ReturnType<typeof portWant> | undefined;
    if (s) {
      const ctx = ctxOf.get(s.family)! as PortContext & { prepare(key: string, hints: string[]): void };
      ctx.prepare(key, kernel ? hintIds(s, ctx) : []);
      try {
        want = portWant(s, ctx);
      } catch (e) {
        if (!(e instanceof RefusedPortError)) throw e;
        refused.push({ key, reason: e.message });
      }
      pendingMarks.delete(key);
    }
    const wantIds = new Set(want?.vs.map((v) => v.id) ?? none);
    if (old) for (const id of old.vs) if (!wantIds.has(id) && vs.get(id)?.owner === key) gone(id);
    for (const v of want?.vs ?? none) reconcile(v, key);
    if (old) for (const id of old.entries) dec(id.slice(0, id.indexOf(' ')), id);
    for (const e of want?.entries ?? none) inc(e);
    if (old) for (const a of old.addrs) decAddr(a);
    for (const a of want?.addrs ?? none) incAddr(a);
    const mark = want?.fwmark ? want.vs.find((v) => isFwmark(v.key))!.key : undefined;
    if (mark && isFwmark(mark)) {
      fwmarks.set(key, mark.fwmark);
      markOwner.set(mark.fwmark, key);
    } else if (fwmarks.has(key)) {
      const m = fwmarks.get(key)!;
      fwmarks.delete(key);
      if (markOwner.get(m) === key) markOwner.delete(m);
    }
    if (want) {
      ports.set(key, { vs: want.vs.map((v) => v.id), entries: want.entries.map((e) => e.id), addrs: want.addrs, ...(mark && isFwmark(mark) ? { fwmark: mark.fwmark } : {}) });
      for (const w of want.warnings) warnings.push({ key, reason: w });
    } else {
      ports.delete(key);
    }
  }

  // A full plan: what the kernel holds and no port claims drains or goes;
  // other people's virtual services stay as they are (and out of the record).
  if (full) {
    for (const [id, v] of [...vs.entries()]) {
      if (claimed.has(id)) continue;
      if ((v as { foreign?: boolean }).foreign) {
        vs.delete(id);
        continue;
      }
      gone(id);
    }
    for (const v of vs.values()) if (v.owner === undefined) holdDrainAddress(v);
  }

  // ipset: a full plan swaps in a fresh copy of every set; a partial one
  // deletes and adds the members whose presence changed (deletes first: a
  // member whose mark changed is deleted, then added again).
  const setNames = new Set(full ? fullInputs!.setNames : record!.setNames);
  let iptablesLines = 0;
  const iptables = new Map<Family, string>();
  if (full) {
    for (const f of o.families) {
      const byName = new Map<string, SetSpec>();
      for (const r of setRoles) byName.set(setName(r, f), setSpec(r, f));
      let i = 0;
      for (const [name, spec] of byName) {
        const scratch = scratchSet(f, i++);
        if (!setNames.has(name)) ipset.addChecked({ verb: 'create', set: name, spec });
        ipset.addChecked({ verb: 'create', set: scratch, spec });
        ipset.addChecked({ verb: 'flush', set: scratch });
        if (name === setName('ipvsIPs', f)) {
          for (const a of addrs.keys()) if (familyOfAddr(a) === f) ipset.addChecked({ verb: 'add', set: scratch, entry: { ip: a } });
        } else {
          for (const id of setOf(name).keys()) ipset.addChecked(memberCommand(id, 'add', scratch));
        }
        ipset.addChecked({ verb: 'swap', set: scratch, other: name });
        ipset.addChecked({ verb: 'destroy', set: scratch });
        setNames.add(name);
      }
      const layout = o.layout.get(f)!;
      const text = restoreBatch(layoutChains(layout), fullInputs!.missingJumps.get(f) ?? none);
      iptables.set(f, text);
      iptablesLines += text ? text.split('\n').length - 1 : 0;
    }
  } else {
    for (const [id, t] of touched) {
      const now = setOf(t.set).has(id);
      if (t.before && !now) ipsetDels.push(memberCommand(id, 'del'));
      else if (!t.before && now) ipsetAdds.push(memberCommand(id, 'add'));
    }
  }

  // Addresses on kube-ipvs0, and the set that lists them.
  if (full) {
    const base = record ? new Set(record.addrs.keys()) : kernel!.dummyAddrs;
    if (!(record ? true : kernel!.dummyExists)) ip.addChecked({ verb: 'add', object: 'link', device: dummyDevice, kind: 'dummy' });
    for (const a of addrs.keys()) if (!base.has(a)) ip.addChecked({ verb: 'add', object: 'address', device: dummyDevice, address: a });
    for (const a of base) if (!addrs.has(a)) ip.addChecked({ verb: 'del', object: 'address', device: dummyDevice, address: a });
  } else {
    for (const [a, before] of touchedAddrs) {
      const after = addrs.has(a);
      if (before === after) continue;
      const set = setName('ipvsIPs', familyOfAddr(a));
      if (after) {
        ip.addChecked({ verb: 'add', object: 'address', device: dummyDevice, address: a });
        ipsetAdds.push({ verb: 'add', set, entry: { ip: a } });
      } else {
        ip.addChecked({ verb: 'del', object: 'address', device: dummyDevice, address: a });
        ipsetDels.push({ verb: 'del', set, entry: { ip: a } });
      }
    }
    for (const c of ipsetDels) ipset.addChecked(c);
    for (const c of ipsetAdds) ipset.addChecked(c);
  }

  const counts = { ipvsadm: ipvs.size, ipset: ipset.size, ip: ip.size, iptables: iptablesLines };
  return {
    full,
    size: counts.ipvsadm + counts.ipset + counts.ip + counts.iptables,
    ...(refused.length ? { refused } : {}),
    ipvsadm: ipvs.toString(),
    ipset: ipset.toString(),
    ipsetExist: full,
    ip: ip.toString(),
    iptables,
    counts,
    ...(warnings.length ? { warnings } : {}),
    commit(): IpvsRecord {
      const committedVs = vs.commit();
      for (const v of committedVs.values()) if ((v as { foreign?: boolean }).foreign !== undefined) delete (v as { foreign?: boolean }).foreign;
      const finalSets = new Map<string, Map<string, number>>();
      for (const [name, m] of baseSets) {
        const o2 = sets.get(name);
        finalSets.set(name, o2 instanceof MapOverlay ? o2.commit() : m);
      }
      return {
        vs: committedVs,
        ports: ports instanceof MapOverlay ? ports.commit() : ports as Map<string, PortRecord>,
        sets: finalSets,
        addrs: addrs instanceof MapOverlay ? addrs.commit() : addrs as Map<string, number>,
        fwmarks: fwmarks instanceof MapOverlay ? fwmarks.commit() : fwmarks as Map<string, number>,
        draining,
        nodeAddrs,
        setNames,
      };
    },
  };
}

/**
 * NodePort addresses when the kernel shows none (a scratch namespace, as
 * `kproxy diff` builds): the Node object's addresses stand in.
 */
export function withNodeIPs(read: NodeAddresses, nodeIPs: readonly string[], cidrs: readonly string[]): NodeAddresses {
  const nodePort = { ...read.nodePort };
  for (const f of [4, 6] as const) {
    if (nodePort[f].length > 0) continue;
    nodePort[f] = nodeIPs.filter((ip) => familyOfAddr(ip) === f && (cidrs.length === 0 || cidrs.some((c) => c.includes(':') === (f === 6) && inCIDR(ip, c))));
  }
  return { local: read.local, nodePort };
}

/** Ids of the firewall-mark set members a port's external addresses would have (hints for its mark). */
function hintIds(s: ServicePortState, ctx: PortContext): string[] {
  const set = setName('fwmark', ctx.family);
  const proto = s.protocol.toLowerCase() as 'tcp';
  const out = [...s.externalIPs, ...s.loadBalancerIPs].map((ip) => `${set} ${renderEntry({ ip, protocol: proto, port: s.port })}`);
  if (s.nodePort > 0) for (const ip of ctx.nodePortAddrs) out.push(`${set} ${renderEntry({ ip, protocol: proto, port: s.nodePort })}`);
  return out;
}
