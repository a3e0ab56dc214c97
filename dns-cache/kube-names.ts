// One cluster's names in memory, kept in step with its Services,
// EndpointSlices and Namespaces, and the answers made from them. A change
// rebuilds only the names of the Service it touches (EndpointSlices matter
// only to headless Services: a ClusterIP Service's names do not depend on
// its endpoints). A question is answered from a node of the name table
// (memoised answers), else, under the zone, by the few names CoreDNS
// computes on the fly (a ClusterIP Service's endpoint, a pod address), else
// NXDOMAIN with the zone's SOA: so every search-path expansion is answered
// here, with nothing sent upstream.
import { ipFamily } from '../lib/net.ts';
import {
  clusterIPs, DNS_SCHEMA_VERSION, ipFromDashed, isExternalName, isHeadless, readyAddresses, reverseName, serviceNames,
  validLabel, type NameData,
} from './kube-records.ts';
import { objectKey, SERVICE_NAME_LABEL, type DnsNamespace, type DnsService, type DnsSlice } from './kube-objects.ts';
import { NameNode, NameTable } from './name-table.ts';
import { makeSynth, type Rr, type Synth } from './synth.ts';
import { RCODE_NOERROR, RCODE_NXDOMAIN, type Query } from './wire.ts';
import { wireName } from './zones.ts';

export const TYPE_A = 1;
export const TYPE_NS = 2;
export const TYPE_CNAME = 5;
export const TYPE_SOA = 6;
export const TYPE_PTR = 12;
export const TYPE_TXT = 16;
export const TYPE_AAAA = 28;
export const TYPE_SRV = 33;

/** TTL of dns-version.<zone> (CoreDNS's). */
const VERSION_TTL = 28800;

export interface KubeNamesOptions {
  /** TTL of every answer (the SOA's too, and its MINIMUM: negative answers). */
  readonly ttl: number;
  /** Answer <a-b-c-d>.<ns>.pod.<zone> with its address for existing namespaces (CoreDNS "pods insecure"). */
  readonly pods: boolean;
}

interface Owned {
  nodes: NameNode[];
  ptrs: ReadonlyArray<{ readonly ip: string; readonly target: string }>;
  /** Counted in its namespace's reference count. */
  countsForNamespace: boolean;
}

interface PtrEntry {
  readonly node: NameNode;
  /** Service key -> targets, in the order Services came. */
  readonly owners: Map<string, string[]>;
}

interface NamespaceEntry {
  refs: number;
  readonly nodes: NameNode[];
}

export class KubeNames {
  /** "cluster.local" */
  readonly zone: string;
  private opts: KubeNamesOptions;
  private readonly table = new NameTable();
  private readonly apexKey: string;
  private readonly apex: NameNode;
  readonly services = new Map<string, DnsService>();
  private readonly slicesByService = new Map<string, Map<string, DnsSlice>>();
  private readonly sliceOwner = new Map<string, string>();
  private readonly namespaces = new Set<string>();
  private readonly owned = new Map<string, Owned>();
  private readonly ptrs = new Map<string, PtrEntry>();
  private readonly nsRefs = new Map<string, NamespaceEntry>();
  /** SOA serial: seconds of the last change (as CoreDNS). */
  private serial = Math.floor(Date.now() / 1000);
  private negatives = new Map<string, Synth>();
  private nx: Synth | undefined;
  private nodata: Synth | undefined;
  private soa: Synth | undefined;
  private negativesSerial = -1;

  constructor(zone: string, opts: KubeNamesOptions) {
    this.zone = zone.toLowerCase().replace(/\.$/, '');
    this.opts = opts;
    this.apexKey = wireName(this.zone);
    this.apex = this.node(this.zone, {});
    this.node(`svc.${this.zone}`, undefined);
    this.node(`pod.${this.zone}`, undefined);
    this.node(`dns-version.${this.zone}`, { txt: [DNS_SCHEMA_VERSION] });
  }

  get size(): { services: number; endpointSlices: number; namespaces: number; names: number } {
    return { services: this.services.size, endpointSlices: this.sliceOwner.size, namespaces: this.namespaces.size, names: this.table.size };
  }

  /** A new TTL or pod setting: every answer is made again. */
  setOptions(opts: KubeNamesOptions): void {
    const podsChanged = opts.pods !== this.opts.pods;
    this.opts = opts;
    this.changed();
    this.negativesSerial = -1;
    for (const o of this.owned.values()) for (const n of o.nodes) n.synth = undefined;
    for (const p of this.ptrs.values()) p.node.synth = undefined;
    for (const n of [this.apex, this.table.get(wireName(`dns-version.${this.zone}`))]) if (n) n.synth = undefined;
    if (podsChanged) {
      for (const [ns, e] of this.nsRefs) {
        for (const n of e.nodes) this.table.remove(n);
        this.nsRefs.set(ns, { refs: e.refs, nodes: this.namespaceNodes(ns) });
      }
    }
  }

  // ---- Keeping the names in step with the objects.

  upsertService(svc: DnsService): void {
    const key = objectKey(svc);
    this.services.set(key, svc);
    this.rebuild(key);
  }

  deleteService(svc: DnsService): void {
    const key = objectKey(svc);
    this.services.delete(key);
    this.rebuild(key);
  }

  upsertSlice(slice: DnsSlice): void {
    const key = objectKey(slice);
    const label = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
    const svcKey = label === undefined ? undefined : `${slice.metadata?.namespace ?? ''}/${label}`;
    const before = this.sliceOwner.get(key);
    if (before !== undefined && before !== svcKey) this.detachSlice(key, before);
    if (svcKey === undefined) return;
    let slices = this.slicesByService.get(svcKey);
    if (slices === undefined) this.slicesByService.set(svcKey, slices = new Map());
    slices.set(key, slice);
    this.sliceOwner.set(key, svcKey);
    this.rebuildIfHeadless(svcKey);
  }

  deleteSlice(slice: DnsSlice): void {
    const key = objectKey(slice);
    const owner = this.sliceOwner.get(key);
    if (owner !== undefined) this.detachSlice(key, owner);
  }

  upsertNamespace(ns: DnsNamespace): void {
    const name = ns.metadata?.name ?? '';
    if (this.namespaces.has(name)) return;
    this.namespaces.add(name);
    this.namespaceRef(name, 1);
  }

  deleteNamespace(ns: DnsNamespace): void {
    const name = ns.metadata?.name ?? '';
    if (!this.namespaces.delete(name)) return;
    this.namespaceRef(name, -1);
  }

  private detachSlice(key: string, svcKey: string): void {
    this.sliceOwner.delete(key);
    const slices = this.slicesByService.get(svcKey);
    slices?.delete(key);
    if (slices?.size === 0) this.slicesByService.delete(svcKey);
    this.rebuildIfHeadless(svcKey);
  }

  private rebuildIfHeadless(svcKey: string): void {
    const svc = this.services.get(svcKey);
    if (svc !== undefined && isHeadless(svc)) this.rebuild(svcKey);
  }

  private changed(): void {
    this.serial = Math.floor(Date.now() / 1000);
  }

  /** Makes a node for a name and puts it in the table. */
  private node(dotted: string, data: NameData | undefined): NameNode {
    const n = new NameNode(wireName(dotted), data);
    this.table.add(n);
    return n;
  }

  /** Replaces the names of one Service with what it and its slices give now. */
  private rebuild(svcKey: string): void {
    this.changed();
    const svc = this.services.get(svcKey);
    const built = svc === undefined
      ? { names: new Map<string, NameData>(), ptrs: [] }
      : serviceNames(this.zone, svc, this.slicesByService.get(svcKey)?.values() ?? []);
    const old = this.owned.get(svcKey);
    const oldNodes = new Map<string, NameNode>();
    for (const n of old?.nodes ?? []) oldNodes.set(n.key, n);
    const nodes: NameNode[] = [];
    for (const [name, data] of built.names) {
      const key = wireName(name);
      const existing = oldNodes.get(key);
      if (existing !== undefined) {
        existing.set(data);
        oldNodes.delete(key);
        nodes.push(existing);
      } else {
        nodes.push(this.node(name, data));
      }
    }
    for (const n of oldNodes.values()) this.table.remove(n);
    this.updatePtrs(svcKey, old?.ptrs ?? [], built.ptrs);
    const counts = nodes.length > 0;
    const ns = svcKey.slice(0, svcKey.indexOf('/'));
    if (counts !== (old?.countsForNamespace ?? false)) this.namespaceRef(ns, counts ? 1 : -1);
    if (nodes.length === 0 && built.ptrs.length === 0) this.owned.delete(svcKey);
    else this.owned.set(svcKey, { nodes, ptrs: built.ptrs, countsForNamespace: counts });
  }

  private updatePtrs(owner: string, before: Owned['ptrs'], after: Owned['ptrs']): void {
    const touched = new Set<string>();
    for (const p of before) {
      this.ptrs.get(p.ip)?.owners.delete(owner);
      touched.add(p.ip);
    }
    for (const p of after) {
      let e = this.ptrs.get(p.ip);
      if (e === undefined) {
        const name = reverseName(p.ip);
        if (name === undefined) continue;
        e = { node: this.node(name, undefined), owners: new Map() };
        this.ptrs.set(p.ip, e);
      }
      let targets = e.owners.get(owner);
      if (targets === undefined) e.owners.set(owner, targets = []);
      if (!targets.includes(p.target)) targets.push(p.target);
      touched.add(p.ip);
    }
    for (const ip of touched) {
      const e = this.ptrs.get(ip);
      if (e === undefined) continue;
      if (e.owners.size === 0) {
        this.table.remove(e.node);
        this.ptrs.delete(ip);
        continue;
      }
      const ptr = [...new Set([...e.owners.values()].flat())];
      e.node.set({ ptr });
    }
  }

  /** <ns>.svc.<zone> (and <ns>.pod.<zone>) exist while the namespace does or a Service in it has names. */
  private namespaceRef(ns: string, delta: number): void {
    const e = this.nsRefs.get(ns);
    if (e === undefined) {
      if (delta > 0) this.nsRefs.set(ns, { refs: delta, nodes: this.namespaceNodes(ns) });
      return;
    }
    e.refs += delta;
    if (e.refs > 0) return;
    for (const n of e.nodes) this.table.remove(n);
    this.nsRefs.delete(ns);
  }

  private namespaceNodes(ns: string): NameNode[] {
    const name = ns.toLowerCase();
    if (!validLabel(name)) return [];
    const nodes = [this.node(`${name}.svc.${this.zone}`, undefined)];
    if (this.opts.pods) nodes.push(this.node(`${name}.pod.${this.zone}`, undefined));
    return nodes;
  }

  // ---- Answers.

  /**
   * The answer to a question, or undefined when the name is not this
   * zone's (and no PTR of it is known here). An ExternalName's answer
   * carries its target in `cname`, for the resolver to chase.
   */
  lookup(msg: Buffer, q: Query): Synth | undefined {
    const node = this.table.find(q.nameHash, q.nameLen, msg);
    if (node !== undefined) return this.answer(node, q.qtype);
    const under = this.labelsBeforeApex(msg, q.nameLen);
    if (under < 0) return undefined;
    return this.computed(msg, under, q.qtype) ?? this.negative(RCODE_NXDOMAIN, this.zone);
  }

  /** How many labels the name has before the zone's apex; -1 when it is not under it. */
  private labelsBeforeApex(msg: Buffer, nameLen: number): number {
    const apex = this.apexKey;
    const end = 12 + nameLen;
    let off = 12;
    let labels = 0;
    while (off < end) {
      if (end - off === apex.length) {
        for (let i = 0; i < apex.length; i++) {
          let c = msg[off + i];
          if (c >= 0x41 && c <= 0x5a) c |= 0x20;
          if (c !== apex.charCodeAt(i)) return -1;
        }
        return labels;
      }
      const len = msg[off];
      if (len === 0) return -1;
      off += len + 1;
      labels++;
    }
    return -1;
  }

  /** The first `n` labels of the question name, lowercased. */
  private static labels(msg: Buffer, n: number): string[] {
    const out: string[] = [];
    let off = 12;
    for (let i = 0; i < n; i++) {
      const len = msg[off];
      out.push(msg.toString('latin1', off + 1, off + 1 + len).toLowerCase());
      off += len + 1;
    }
    return out;
  }

  /**
   * Names CoreDNS answers without holding them: <endpoint>.<svc>.<ns>.svc
   * of a ClusterIP Service (an endpoint's hostname or dashed address), and
   * <dashed-address>.<ns>.pod when pod records are on.
   */
  private computed(msg: Buffer, under: number, qtype: number): Synth | undefined {
    if (under !== 3 && under !== 4) return undefined;
    const l = KubeNames.labels(msg, under);
    if (under === 4 && l[3] === 'svc') {
      const svc = this.services.get(`${l[2]}/${l[1]}`);
      if (svc === undefined || isHeadless(svc) || isExternalName(svc) || clusterIPs(svc).length === 0) return undefined;
      const ips = readyAddresses(svc, this.slicesByService.get(`${l[2]}/${l[1]}`)?.values() ?? [])
        .filter((r) => r.host === l[0]).map((r) => r.ip);
      return ips.length === 0 ? undefined : this.addresses([...new Set(ips)], qtype);
    }
    if (under === 3 && l[2] === 'pod' && this.opts.pods && this.nsRefs.has(l[1])) {
      const ip = ipFromDashed(l[0]);
      return ip === undefined ? undefined : this.addresses([ip], qtype);
    }
    return undefined;
  }

  private addresses(ips: readonly string[], qtype: number): Synth {
    const want = qtype === TYPE_A ? 4 : qtype === TYPE_AAAA ? 6 : 0;
    const rrs = ips.filter((ip) => ipFamily(ip) === want).map((ip): Rr => ({ type: want === 4 ? 'A' : 'AAAA', ttl: this.opts.ttl, data: ip }));
    return rrs.length ? makeSynth(RCODE_NOERROR, rrs) : this.negative(RCODE_NOERROR, this.zone);
  }

  private answer(node: NameNode, qtype: number): Synth {
    const memo = node.synth;
    if (memo !== undefined) {
      for (let i = 0; i < memo.length; i++) if (memo[i].qtype === qtype) return memo[i].s;
    }
    const d = node.data;
    if (node === this.apex && qtype === TYPE_SOA) return this.soaAnswer();
    const made = d === undefined ? undefined : this.make(d, qtype);
    if (made === undefined) return this.negative(RCODE_NOERROR, this.ownerZone(node));
    (node.synth ??= []).push({ qtype, s: made });
    return made;
  }

  /** The answer from a name's records for one type; undefined when it has none (NODATA). */
  private make(d: NameData, qtype: number): Synth | undefined {
    const ttl = this.opts.ttl;
    if (d.cname !== undefined) {
      const cname: Rr = { type: 'CNAME', ttl, data: d.cname };
      if (qtype === TYPE_CNAME) return makeSynth(RCODE_NOERROR, [cname]);
      // SRV of an ExternalName is left empty, as in CoreDNS.
      if (qtype === TYPE_SRV) return undefined;
      return makeSynth(RCODE_NOERROR, [cname], [], [], d.cname);
    }
    const list = (type: string, data: readonly unknown[] | undefined, rrTtl = ttl): Synth | undefined =>
      data?.length ? makeSynth(RCODE_NOERROR, data.map((x): Rr => ({ type, ttl: rrTtl, data: x }))) : undefined;
    switch (qtype) {
      case TYPE_A: return list('A', d.a);
      case TYPE_AAAA: return list('AAAA', d.aaaa);
      case TYPE_PTR: return list('PTR', d.ptr);
      case TYPE_TXT: return list('TXT', d.txt, VERSION_TTL);
      case TYPE_SRV: {
        if (!d.srv?.length) return undefined;
        const extra = (d.extra ?? []).map((e): Rr => ({ name: e.name, type: e.ip.includes(':') ? 'AAAA' : 'A', ttl, data: e.ip }));
        return makeSynth(RCODE_NOERROR, d.srv.map((s): Rr => ({ type: 'SRV', ttl, data: s })), [], extra);
      }
      default: return undefined;
    }
  }

  /** The zone whose SOA goes with a node's NODATA: a reverse zone for PTR names. */
  private ownerZone(node: NameNode): string {
    if (node.key.endsWith('\x07in-addr\x04arpa\x00')) return 'in-addr.arpa';
    if (node.key.endsWith('\x03ip6\x04arpa\x00')) return 'ip6.arpa';
    return this.zone;
  }

  private soaRr(apex: string): Rr {
    return {
      name: apex, type: 'SOA', ttl: Math.min(300, this.opts.ttl),
      data: {
        mname: `ns.dns.${this.zone}`, rname: `hostmaster.${this.zone}`, serial: this.serial >>> 0,
        refresh: 7200, retry: 1800, expire: 86400, minimum: this.opts.ttl,
      },
    };
  }

  private soaAnswer(): Synth {
    this.fresh();
    return this.soa ??= makeSynth(RCODE_NOERROR, [{ ...this.soaRr(this.zone), name: undefined }]);
  }

  /** NXDOMAIN or NODATA with the SOA of `apex` (RFC 2308), made again when the serial moves. */
  private negative(rcode: number, apex: string): Synth {
    this.fresh();
    if (apex === this.zone) {
      if (rcode === RCODE_NXDOMAIN) return this.nx ??= makeSynth(rcode, [], [this.soaRr(apex)]);
      return this.nodata ??= makeSynth(rcode, [], [this.soaRr(apex)]);
    }
    const key = `${rcode} ${apex}`;
    let s = this.negatives.get(key);
    if (s === undefined) this.negatives.set(key, s = makeSynth(rcode, [], [this.soaRr(apex)]));
    return s;
  }

  /** Drops the answers that hold the SOA once its serial has moved. */
  private fresh(): void {
    if (this.negativesSerial === this.serial) return;
    this.negatives = new Map();
    this.nx = this.nodata = this.soa = undefined;
    this.negativesSerial = this.serial;
  }
}
