// One cluster's names in memory, kept in step with its Services,
// EndpointSlices and Namespaces, and the answers made from them.
//
// The names most asked, <svc>.<ns>.svc.<zone> and a headless Service's
// endpoint names, are nodes of a hash table found from the query's bytes,
// each with its answers encoded once, on first use. The rest are worked
// out when asked, from the Service: SRV names of ports (memoised per
// Service), the endpoint names of a ClusterIP Service, pod names, and the
// PTR of an address (an index from address to Services). Anything else
// under the zone is NXDOMAIN with the zone's SOA, so every search-path
// expansion is answered here with nothing sent upstream. A change rebuilds
// only the Service it touches; EndpointSlices matter only to headless
// Services' nodes.
import {
  addressData, DNS_SCHEMA_VERSION, endpointHosts, ipFromDashed, ipFromReverse, isHeadless, namedPortData, protocolExists,
  readyAddresses, serviceData, validLabel, type NameData, type ReadyAddress,
} from './kube-records.ts';
import { serviceIPs, type DnsNamespace, type DnsService, type DnsSlice } from './kube-objects.ts';
import { NameNode, NameTable } from './name-table.ts';
import { makeSynth, type Rr, type Synth } from './synth.ts';
import { RCODE_NOERROR, RCODE_NXDOMAIN, type Query } from './wire.ts';
import { wireName } from './zones.ts';

export const TYPE_A = 1;
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

/** One Service (or only its EndpointSlices, before it arrives) and what it put in the table and index. */
class ServiceState {
  /** As in the object (valid names are lowercase; others never get a name). */
  readonly ns: string;
  readonly name: string;
  svc: DnsService | undefined = undefined;
  slices: DnsSlice[] = [];
  /** <svc>.<ns>.svc.<zone>, while it has names. */
  node: NameNode | undefined = undefined;
  /** A headless Service's endpoint names. */
  endpoints: NameNode[] | undefined = undefined;
  /** Addresses it holds in the PTR index, space-separated. */
  ips: string | undefined = undefined;
  countsForNamespace = false;
  /** SRV answers of its named ports, made when asked. */
  srv: Array<{ readonly key: string; readonly s: Synth | undefined }> | undefined = undefined;

  constructor(ns: string, name: string) {
    this.ns = ns;
    this.name = name;
  }

  /** The Service's name (its labels are lowercase when valid), without the zone's final dot. */
  base(zone: string): string {
    return `${this.name}.${this.ns}.svc.${zone}`;
  }

  ready(): ReadyAddress[] {
    return this.svc === undefined ? [] : readyAddresses(this.svc, this.slices);
  }
}

/**
 * What a table node stands for, its answers made from it on first use: a
 * Service (its own name), one of its endpoints, or fixed records (the
 * zone's own names; none: the name exists without data).
 */
type NodeSource = ServiceState | EndpointName | FixedName;

interface EndpointName {
  readonly state: ServiceState;
  readonly host: string;
}

interface FixedName {
  readonly data?: NameData;
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
  /** namespace -> name -> state (nested: no key string per Service). */
  private readonly states = new Map<string, Map<string, ServiceState>>();
  private services = 0;
  /** namespace -> slice name -> the state it belongs to. */
  private readonly sliceOwner = new Map<string, Map<string, ServiceState>>();
  private slices = 0;
  private readonly namespaces = new Set<string>();
  private readonly byAddress = new Map<string, ServiceState | ServiceState[]>();
  private readonly nsRefs = new Map<string, NamespaceEntry>();
  /** SOA serial: seconds of the last change (as CoreDNS). */
  private serial = Math.floor(Date.now() / 1000);
  private negativesSerial = -1;
  private nx: Synth | undefined;
  private nodata: Synth | undefined;
  private soa: Synth | undefined;
  private reverseNodata: Synth | undefined;
  private reverseNodata6: Synth | undefined;

  constructor(zone: string, opts: KubeNamesOptions) {
    this.zone = zone.toLowerCase().replace(/\.$/, '');
    this.opts = opts;
    this.apexKey = wireName(this.zone);
    this.apex = this.node(this.zone, { data: {} });
    this.node(`svc.${this.zone}`, {});
    this.node(`pod.${this.zone}`, {});
    this.node(`dns-version.${this.zone}`, { data: { txt: [DNS_SCHEMA_VERSION] } });
  }

  get size(): { services: number; endpointSlices: number; namespaces: number; names: number } {
    return { services: this.services, endpointSlices: this.slices, namespaces: this.namespaces.size, names: this.table.size };
  }

  /** A new TTL or pod setting: every answer is made again. */
  setOptions(opts: KubeNamesOptions): void {
    const podsChanged = opts.pods !== this.opts.pods;
    this.opts = opts;
    this.changed();
    this.negativesSerial = -1;
    this.table.forEach((n) => { n.synth = undefined; });
    for (const m of this.states.values()) for (const s of m.values()) s.srv = undefined;
    if (podsChanged) {
      for (const [ns, e] of this.nsRefs) {
        for (const n of e.nodes) this.table.remove(n);
        this.nsRefs.set(ns, { refs: e.refs, nodes: this.namespaceNodes(ns) });
      }
    }
  }

  // ---- Keeping the names in step with the objects.

  private find(ns: string, name: string): ServiceState | undefined {
    return this.states.get(ns)?.get(name);
  }

  private state(ns: string, name: string): ServiceState {
    let m = this.states.get(ns);
    if (m === undefined) this.states.set(ns, m = new Map());
    let s = m.get(name);
    if (s === undefined) m.set(name, s = new ServiceState(ns, name));
    return s;
  }

  private drop(s: ServiceState): void {
    if (s.svc !== undefined || s.slices.length > 0) return;
    const m = this.states.get(s.ns);
    m?.delete(s.name);
    if (m?.size === 0) this.states.delete(s.ns);
  }

  upsertService(svc: DnsService): void {
    const s = this.state(svc.metadata?.namespace ?? '', svc.metadata?.name ?? '');
    if (s.svc === undefined) this.services++;
    s.svc = svc;
    this.rebuild(s);
  }

  deleteService(svc: DnsService): void {
    const s = this.find(svc.metadata?.namespace ?? '', svc.metadata?.name ?? '');
    if (s?.svc === undefined) return;
    this.services--;
    s.svc = undefined;
    this.rebuild(s);
    this.drop(s);
  }

  upsertSlice(slice: DnsSlice): void {
    const ns = slice.metadata?.namespace ?? '';
    const name = slice.metadata?.name ?? '';
    const before = this.sliceOwner.get(ns)?.get(name);
    const owner = slice.service === undefined ? undefined : this.state(ns, slice.service);
    if (before !== undefined && before !== owner) this.detachSlice(ns, name, before);
    if (owner === undefined) return;
    const i = owner.slices.findIndex((x) => x.metadata?.name === name);
    // New arrays of the exact length: a pushed-to array keeps room for 16 more.
    owner.slices = i >= 0 ? owner.slices.map((x, j) => (j === i ? slice : x)) : [...owner.slices, slice];
    if (before === undefined) {
      let m = this.sliceOwner.get(ns);
      if (m === undefined) this.sliceOwner.set(ns, m = new Map());
      m.set(name, owner);
      this.slices++;
    }
    if (owner.svc !== undefined && isHeadless(owner.svc)) this.rebuild(owner);
  }

  deleteSlice(slice: DnsSlice): void {
    const ns = slice.metadata?.namespace ?? '';
    const name = slice.metadata?.name ?? '';
    const owner = this.sliceOwner.get(ns)?.get(name);
    if (owner !== undefined) this.detachSlice(ns, name, owner);
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

  private detachSlice(ns: string, name: string, owner: ServiceState): void {
    const m = this.sliceOwner.get(ns);
    if (m?.delete(name)) this.slices--;
    if (m?.size === 0) this.sliceOwner.delete(ns);
    owner.slices = owner.slices.filter((x) => x.metadata?.name !== name);
    if (owner.svc !== undefined && isHeadless(owner.svc)) this.rebuild(owner);
    this.drop(owner);
  }

  private changed(): void {
    this.serial = Math.floor(Date.now() / 1000);
  }

  /** Makes a node for a name and puts it in the table. */
  private node(dotted: string, source: NodeSource): NameNode {
    const n = new NameNode(wireName(dotted), source);
    this.table.add(n);
    return n;
  }

  /** Puts a Service's names, endpoint names and addresses in step with it and its slices. */
  private rebuild(s: ServiceState): void {
    this.changed();
    s.srv = undefined;
    const svc = s.svc;
    const valid = validLabel(s.ns) && validLabel(s.name);
    // Endpoints matter to a headless Service's names only.
    const ready = svc !== undefined && valid && isHeadless(svc) ? s.ready() : [];
    const base = s.base(this.zone);
    const has = svc !== undefined && valid && serviceData(base, svc, ready) !== undefined;
    // The Service's own name.
    if (has && s.node === undefined) s.node = this.node(base, s);
    else if (!has && s.node !== undefined) {
      this.table.remove(s.node);
      s.node = undefined;
    } else if (s.node !== undefined) s.node.synth = undefined;
    // A headless Service's endpoint names.
    const hosts = has && svc !== undefined && isHeadless(svc) ? endpointHosts(ready) : new Map<string, string[]>();
    const kept: NameNode[] = [];
    for (const n of s.endpoints ?? []) {
      const host = (n.source as EndpointName).host;
      if (hosts.delete(host)) {
        n.synth = undefined;
        kept.push(n);
      } else this.table.remove(n);
    }
    for (const host of hosts.keys()) kept.push(this.node(`${host}.${base}`, { state: s, host }));
    s.endpoints = kept.length ? kept : undefined;
    // Its addresses for PTR: ClusterIPs, or a headless Service's ready endpoints.
    const ips = !has || svc === undefined ? [] : isHeadless(svc) ? [...new Set(ready.map((r) => r.ip))] : serviceIPs(svc);
    if (s.ips !== undefined) for (const ip of s.ips.split(' ')) this.unindex(ip, s);
    for (const ip of ips) this.index(ip, s);
    s.ips = ips.length === 0 ? undefined : svc !== undefined && !isHeadless(svc) ? svc.ips : ips.join(' ');
    if (has !== s.countsForNamespace) {
      this.namespaceRef(s.ns, has ? 1 : -1);
      s.countsForNamespace = has;
    }
  }

  private index(ip: string, s: ServiceState): void {
    const e = this.byAddress.get(ip);
    if (e === undefined) this.byAddress.set(ip, s);
    else if (Array.isArray(e)) e.push(s);
    else if (e !== s) this.byAddress.set(ip, [e, s]);
  }

  private unindex(ip: string, s: ServiceState): void {
    const e = this.byAddress.get(ip);
    if (e === s) this.byAddress.delete(ip);
    else if (Array.isArray(e)) {
      const rest = e.filter((x) => x !== s);
      this.byAddress.set(ip, rest.length === 1 ? rest[0] : rest);
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
    const nodes = [this.node(`${name}.svc.${this.zone}`, {})];
    if (this.opts.pods) nodes.push(this.node(`${name}.pod.${this.zone}`, {}));
    return nodes;
  }

  // ---- Answers.

  /**
   * The answer to a question, or undefined when the name is not this
   * zone's (and not the reverse name of an address it knows). An
   * ExternalName's answer carries its target in `cname`, for the resolver
   * to chase.
   */
  lookup(msg: Buffer, q: Query): Synth | undefined {
    const node = this.table.find(q.nameHash, q.nameLen, msg);
    if (node !== undefined) return this.answer(node, q.qtype);
    const under = this.labelsBefore(msg, q.nameLen, this.apexKey);
    if (under >= 0) return this.computed(msg, under, q.qtype) ?? this.negative(RCODE_NXDOMAIN);
    return this.reverse(msg, q);
  }

  /** How many labels the name has before `suffix` (a lowercased wire name); -1 when it is not under it. */
  private labelsBefore(msg: Buffer, nameLen: number, suffix: string): number {
    const end = 12 + nameLen;
    let off = 12;
    let labels = 0;
    while (off < end) {
      if (end - off === suffix.length) {
        for (let i = 0; i < suffix.length; i++) {
          let c = msg[off + i];
          if (c >= 0x41 && c <= 0x5a) c |= 0x20;
          if (c !== suffix.charCodeAt(i)) return -1;
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
   * Names worked out when asked: _<port>._<proto>.<svc> (SRV) and
   * _<proto>.<svc> of a Service, an endpoint of a ClusterIP Service by
   * hostname or dashed address (as CoreDNS), <dashed-address>.<ns>.pod
   * when pod records are on. Undefined: no such name (NXDOMAIN).
   */
  private computed(msg: Buffer, under: number, qtype: number): Synth | undefined {
    if (under < 3 || under > 5) return undefined;
    const l = KubeNames.labels(msg, under);
    if (l[under - 1] === 'pod') {
      if (under !== 3 || !this.opts.pods || !this.nsRefs.has(l[1])) return undefined;
      const ip = ipFromDashed(l[0]);
      return ip === undefined ? undefined : this.addresses([ip], qtype);
    }
    if (l[under - 1] !== 'svc') return undefined;
    const s = this.find(l[under - 2], l[under - 3]);
    if (s?.node === undefined || s.svc === undefined) return undefined;
    const svc = s.svc;
    if (under === 5) {
      if (!l[0].startsWith('_') || !l[1].startsWith('_')) return undefined;
      const key = `${l[0]}.${l[1]}`;
      let memo = s.srv?.find((m) => m.key === key);
      if (memo === undefined) {
        const d = namedPortData(s.base(this.zone), svc, s.ready(), l[0].slice(1), l[1].slice(1));
        memo = { key, s: d === undefined ? undefined : this.make(d, TYPE_SRV) };
        (s.srv ??= []).push(memo);
      }
      if (memo.s === undefined) return undefined;
      return qtype === TYPE_SRV ? memo.s : this.negative(RCODE_NOERROR);
    }
    if (l[0].startsWith('_')) return protocolExists(svc, s.ready(), l[0].slice(1)) ? this.negative(RCODE_NOERROR) : undefined;
    if (isHeadless(svc) || svc.externalName !== undefined) return undefined;
    const ips = s.ready().filter((r) => r.host === l[0]).map((r) => r.ip);
    return ips.length === 0 ? undefined : this.addresses(ips, qtype);
  }

  private static readonly IN_ADDR = wireName('in-addr.arpa');
  private static readonly IP6 = wireName('ip6.arpa');

  /** The PTR of an address this zone knows: its Services, or its endpoints' names. */
  private reverse(msg: Buffer, q: Query): Synth | undefined {
    // Cheap test first (every name not ours passes here): does it end in "arpa"?
    const end = 12 + q.nameLen;
    if (q.nameLen < 6 || msg[end - 6] !== 4 || (msg[end - 5] | 0x20) !== 0x61 || (msg[end - 2] | 0x20) !== 0x61) return undefined;
    let v6 = false;
    let under = this.labelsBefore(msg, q.nameLen, KubeNames.IN_ADDR);
    if (under < 0) {
      under = this.labelsBefore(msg, q.nameLen, KubeNames.IP6);
      v6 = true;
    }
    if (under !== 4 && under !== 32) return undefined;
    const ip = ipFromReverse(KubeNames.labels(msg, under), v6);
    const e = ip === undefined ? undefined : this.byAddress.get(ip);
    if (e === undefined || ip === undefined) return undefined;
    const targets = new Set<string>();
    for (const s of Array.isArray(e) ? e : [e]) {
      const base = s.base(this.zone);
      if (s.svc !== undefined && isHeadless(s.svc)) for (const r of s.ready()) { if (r.ip === ip) targets.add(`${r.host}.${base}`); }
      else targets.add(base);
    }
    if (q.qtype !== TYPE_PTR) return this.reverseNegative(v6);
    return makeSynth(RCODE_NOERROR, [...targets].map((t): Rr => ({ type: 'PTR', ttl: this.opts.ttl, data: t })));
  }

  private addresses(ips: readonly string[], qtype: number): Synth {
    return this.make(addressData(ips), qtype) ?? this.negative(RCODE_NOERROR);
  }

  private answer(node: NameNode, qtype: number): Synth {
    const memo = node.synth;
    if (memo !== undefined) {
      for (let i = 0; i < memo.length; i++) if (memo[i].qtype === qtype) return memo[i].s;
    }
    if (node === this.apex && qtype === TYPE_SOA) return this.soaAnswer();
    const made = this.make(this.dataOf(node), qtype);
    if (made === undefined) return this.negative(RCODE_NOERROR);
    (node.synth ??= []).push({ qtype, s: made });
    return made;
  }

  /** A node's records, from its Service when it has one. */
  private dataOf(node: NameNode): NameData | undefined {
    const src = node.source as NodeSource;
    if (src instanceof ServiceState) return src.svc === undefined ? undefined : serviceData(src.base(this.zone), src.svc, src.ready());
    if ('host' in src) return addressData(src.state.ready().filter((r) => r.host === src.host).map((r) => r.ip));
    return src.data;
  }

  /** The answer from a name's records for one type; undefined when it has none (NODATA). */
  private make(d: NameData | undefined, qtype: number): Synth | undefined {
    if (d === undefined) return undefined;
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

  /** NXDOMAIN or NODATA with the zone's SOA (RFC 2308), made again when the serial moves. */
  private negative(rcode: number): Synth {
    this.fresh();
    if (rcode === RCODE_NXDOMAIN) return this.nx ??= makeSynth(rcode, [], [this.soaRr(this.zone)]);
    return this.nodata ??= makeSynth(rcode, [], [this.soaRr(this.zone)]);
  }

  /** NODATA for a reverse name asked for another type than PTR (the SOA of in-addr.arpa or ip6.arpa). */
  private reverseNegative(v6: boolean): Synth {
    this.fresh();
    if (v6) return this.reverseNodata6 ??= makeSynth(RCODE_NOERROR, [], [this.soaRr('ip6.arpa')]);
    return this.reverseNodata ??= makeSynth(RCODE_NOERROR, [], [this.soaRr('in-addr.arpa')]);
  }

  /** Drops the answers that hold the SOA once its serial has moved. */
  private fresh(): void {
    if (this.negativesSerial === this.serial) return;
    this.nx = this.nodata = this.soa = this.reverseNodata = this.reverseNodata6 = undefined;
    this.negativesSerial = this.serial;
  }
}
