// Keeps the Services, EndpointSlices and this Node as the source reports
// them, and turns them into this node's NodeState. Work is incremental: an
// event only marks its Service dirty, and a snapshot recomputes the dirty
// Services alone, comparing each service port with the previous snapshot so
// that changes which net to nothing disappear.
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { isIP } from 'node:net';
import type { Logger } from '../lib/log.ts';
import type { Changes, Family, NodeState, ServicePortState, StaleUdpEndpoint, StaleUdpServiceIP } from './model.ts';
import type { SourceEvent } from './source/source.ts';
import type { InvalidObject, ServiceTracker, TrackerOptions } from './tracker-api.ts';
import { addStaleUdp } from './conntrack-changes.ts';
import { categorizeEndpoints, collectEndpoints, portKey, serviceNameLabel, type SliceEndpoint } from './endpoints.ts';
import { resolvePort } from './port-decisions.ts';
import { externallyReachable, samePortState, servicePortInfos, skipReason, type ServicePortInfo } from './service-ports.ts';
import { addressClaim, ClaimBook, nodePortClaim, rankOf } from './claims.ts';
import { unmatchedPort, unusedSlices } from './slice-notes.ts';
import { schedulerChoice } from './scheduler.ts';
import { hostPort, inCIDR } from '../lib/net.ts';
import { SnapshotMapBuilder } from './snapshot-map.ts';
import { servicePreference, zoneLabel } from './topology.ts';
import { validateEndpointSlice, validateService } from './validate.ts';

export const triggerTimeAnnotation = 'endpoints.kubernetes.io/last-change-trigger-time';

type Meta = { metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string } };

function nsName(obj: Meta): string | undefined {
  const m = obj.metadata;
  return m?.name && m.namespace ? `${m.namespace}/${m.name}` : undefined;
}

/** The Service an EndpointSlice belongs to, as "namespace/name". */
function owner(slice: V1EndpointSlice): string | undefined {
  const svc = slice.metadata?.labels?.[serviceNameLabel];
  return svc ? `${slice.metadata!.namespace}/${svc}` : undefined;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** This node's InternalIP and ExternalIP addresses, from its Node object. */
export function nodeAddresses(node: V1Node | undefined): string[] {
  const ips: string[] = [];
  for (const a of node?.status?.addresses ?? []) {
    if ((a.type === 'InternalIP' || a.type === 'ExternalIP') && a.address && !ips.includes(a.address)) ips.push(a.address);
  }
  return ips;
}

/** A Service's ports without endpoints, one list per family it has, and what was already taken out. */
interface PortInfos {
  readonly svc: V1Service;
  readonly byFamily: readonly (readonly ServicePortInfo[])[];
  readonly problems: readonly string[];
}

/** `info` with some external addresses or its NodePort taken away; externalTrafficPolicy Local only while still reachable from outside. */
function withExternal(info: ServicePortInfo, change: Partial<Pick<ServicePortInfo, 'externalIPs' | 'loadBalancerIPs' | 'nodePort'>>): ServicePortInfo {
  const next = { ...info, ...change };
  const reachable = externallyReachable(next);
  return {
    ...next,
    externalPolicyLocal: info.externalPolicyLocal && reachable,
    healthCheckNodePort: reachable ? info.healthCheckNodePort : 0,
    loadBalancerSourceRanges: next.loadBalancerIPs.length > 0 ? info.loadBalancerSourceRanges : [],
  };
}

export class Tracker implements ServiceTracker {
  readonly #opts: TrackerOptions;
  readonly #log: Logger;
  /** Last good version of each Service, by "namespace/name". */
  readonly #services = new Map<string, V1Service>();
  /** Last good version of each EndpointSlice, by "namespace/name" of the slice. */
  readonly #slices = new Map<string, V1EndpointSlice>();
  /** Slices of each Service (by the Service's "namespace/name"). */
  readonly #slicesOf = new Map<string, Map<string, V1EndpointSlice>>();
  /** Services whose ports must be recomputed at the next snapshot. */
  readonly #dirty = new Set<string>();
  #allDirty = false;
  #fullRequested = true;
  #synced = false;
  #nodeLabels: Record<string, string> = {};
  #nodeIPs: readonly string[] = [];
  #nodeIPsChanged = false;
  /** Service ports of each Service as of the last snapshot. */
  readonly #portsOf = new Map<string, readonly ServicePortState[]>();
  readonly #state = new SnapshotMapBuilder<ServicePortState>();
  #triggerTimes: number[] = [];
  /**
   * What was last reported about each malformed object ("kind namespace/name"
   * → uid, resourceVersion and problems), so that a relist or a file re-read
   * bringing the same version again is not reported again.
   */
  readonly #reported = new Map<string, string>();

  constructor(opts: TrackerOptions, log: Logger) {
    this.#opts = opts;
    this.#log = log;
  }

  apply(event: SourceEvent): void {
    switch (event.kind) {
      case 'Synced': this.#synced = true; return;
      case 'Service': this.#applyService(event.type, event.object); return;
      case 'EndpointSlice': this.#applySlice(event.type, event.object); return;
      case 'Node': this.#applyNode(event.type, event.object); return;
    }
  }

  #recordTrigger(obj: { metadata?: { annotations?: Record<string, string> } }): void {
    const at = Date.parse(obj.metadata?.annotations?.[triggerTimeAnnotation] ?? '');
    this.#triggerTimes.push(Number.isNaN(at) ? Date.now() : at);
  }

  #applyService(type: 'upsert' | 'delete', svc: V1Service): void {
    const key = nsName(svc);
    if (type === 'delete') {
      if (!key) {
        this.#log.warn({ kind: 'Service' }, 'Service deletion without namespace/name ignored');
        return;
      }
      this.#reported.delete(`Service ${key}`);
      if (this.#services.delete(key)) {
        this.#dirty.add(key);
        this.#recordTrigger(svc);
      }
      return;
    }
    const problems = validateService(svc);
    if (problems.length > 0) {
      this.#skipInvalid({ kind: 'Service', object: svc, problems }, key, key !== undefined && this.#services.has(key));
      return;
    }
    this.#reported.delete(`Service ${key}`);
    const reason = skipReason(svc);
    if (reason) this.#log.debug({ service: key, reason }, 'Service not proxied');
    this.#services.set(key!, svc);
    this.#dirty.add(key!);
    this.#recordTrigger(svc);
  }

  #applySlice(type: 'upsert' | 'delete', slice: V1EndpointSlice): void {
    const key = nsName(slice);
    if (type === 'upsert') {
      const problems = validateEndpointSlice(slice);
      if (problems.length > 0) {
        this.#skipInvalid({ kind: 'EndpointSlice', object: slice, problems }, key, key !== undefined && this.#slices.has(key));
        return;
      }
    } else if (!key) {
      this.#log.warn({ kind: 'EndpointSlice' }, 'EndpointSlice deletion without namespace/name ignored');
      return;
    }
    this.#reported.delete(`EndpointSlice ${key}`);
    const previous = this.#slices.get(key!);
    if (previous) {
      const was = owner(previous);
      if (was) {
        this.#slicesOf.get(was)?.delete(key!);
        this.#dirty.add(was);
      }
      this.#slices.delete(key!);
    }
    if (type === 'upsert') {
      this.#slices.set(key!, slice);
      const svc = owner(slice);
      if (svc) {
        let set = this.#slicesOf.get(svc);
        if (!set) this.#slicesOf.set(svc, set = new Map());
        set.set(key!, slice);
        this.#dirty.add(svc);
      } else {
        this.#log.debug({ slice: key }, `EndpointSlice without ${serviceNameLabel} label ignored`);
      }
    }
    if (type === 'upsert' || previous) this.#recordTrigger(slice);
  }

  /**
   * Logs a skipped object and tells onInvalid, once per distinct version and
   * problem list; repeats (a relist, a periodic re-read) are logged at debug.
   */
  #skipInvalid(invalid: InvalidObject, key: string | undefined, keptPrevious: boolean): void {
    const m = (invalid.object as Meta).metadata;
    const id = `${invalid.kind} ${key ?? m?.uid ?? m?.name ?? '(unnamed)'}`;
    const seen = `${m?.uid ?? ''}@${m?.resourceVersion ?? ''}\n${invalid.problems.join('\n')}`;
    const fields = { kind: invalid.kind, object: key ?? m?.name ?? '(unnamed)', problems: invalid.problems, keptPrevious };
    if (this.#reported.get(id) === seen) {
      this.#log.debug(fields, `invalid ${invalid.kind} skipped again`);
      return;
    }
    this.#reported.set(id, seen);
    this.#log.warn(fields, `invalid ${invalid.kind} skipped`);
    try {
      this.#opts.onInvalid?.(invalid);
    } catch (err) {
      this.#log.warn({ err, kind: invalid.kind, object: fields.object }, 'onInvalid hook failed');
    }
  }

  #applyNode(type: 'upsert' | 'delete', node: V1Node): void {
    if (node.metadata?.name !== this.#opts.nodeName) return;
    if (type === 'delete') this.#log.warn({ node: this.#opts.nodeName }, 'this Node was deleted');
    const labels = type === 'delete' ? {} : { ...node.metadata?.labels };
    const ips = type === 'delete' ? [] : nodeAddresses(node);
    if (!sameLabels(labels, this.#nodeLabels)) {
      this.#nodeLabels = labels;
      this.#allDirty = true;
    }
    if (ips.join(',') !== this.#nodeIPs.join(',')) {
      this.#nodeIPs = ips;
      this.#nodeIPsChanged = true;
    }
  }

  pending(): number {
    if (this.#allDirty) return Math.max(this.#state.size, 1);
    let n = 0;
    for (const key of this.#dirty) {
      n += this.#portsOf.get(key)?.length || this.#services.get(key)?.spec?.ports?.length || 1;
    }
    return n;
  }

  synced(): boolean {
    return this.#synced;
  }

  requestFull(): void {
    this.#fullRequested = true;
  }

  /** Who holds each address:port:protocol and NodePort (claims.ts). */
  readonly #claims = new ClaimBook();

  /** Services already warned about: an address family this node does not program. */
  readonly #offFamilyWarned = new Set<string>();

  /** A Service address of a family kproxy was not started with gets no rules: say so once. */
  #warnOffFamily(key: string, svc: V1Service): void {
    if (this.#offFamilyWarned.has(key)) return;
    const off = (svc.spec?.clusterIPs ?? [svc.spec?.clusterIP]).filter((ip): ip is string => {
      const f = ip ? isIP(ip) : 0;
      return f !== 0 && !this.#opts.families.includes(f as Family);
    });
    if (off.length === 0) return;
    this.#offFamilyWarned.add(key);
    this.#log.warn({ service: key, addresses: off, families: this.#opts.families }, 'Service address of an IP family this node does not program: no rules for it (restart kproxy to enable that family)');
  }

  /**
   * The service ports of one Service without their endpoints, per family,
   * with externalIPs outside --external-ip-cidrs taken out (and reported).
   */
  #infos(key: string): PortInfos | undefined {
    const svc = this.#services.get(key);
    if (!svc || skipReason(svc)) return undefined;
    this.#warnOffFamily(key, svc);
    const allowed = this.#opts.externalIPCIDRs ?? [];
    const problems: string[] = [];
    const scheduler = schedulerChoice(svc, problems);
    const byFamily: ServicePortInfo[][] = [];
    const unserved = this.#opts.unservedProtocols;
    for (const family of this.#opts.families as readonly Family[]) {
      let infos = servicePortInfos(svc, family, scheduler);
      if (unserved !== undefined && infos.some((i) => unserved.protocols.includes(i.protocol))) {
        for (const i of infos) if (unserved.protocols.includes(i.protocol)) problems.push(`port ${i.portName || i.port}/${i.protocol}: the ${unserved.mode} mode does not serve ${i.protocol}`);
        infos = infos.filter((i) => !unserved.protocols.includes(i.protocol));
      }
      if (allowed.length > 0) {
        infos = infos.map((info) => {
          const kept = info.externalIPs.filter((ip) => allowed.some((c) => inCIDR(ip, c)));
          if (kept.length === info.externalIPs.length) return info;
          for (const ip of info.externalIPs) if (!kept.includes(ip)) problems.push(`externalIP ${ip} is outside --external-ip-cidrs`);
          return withExternal(info, { externalIPs: kept });
        });
      }
      if (infos.length > 0) byFamily.push(infos);
    }
    return { svc, byFamily, problems: [...new Set(problems)] };
  }

  /** The addresses and NodePorts the Service claims (claims.ts). */
  static #claimsOf(p: PortInfos | undefined): string[] {
    const out = new Set<string>();
    for (const infos of p?.byFamily ?? []) {
      for (const i of infos) {
        for (const ip of [i.clusterIP, ...i.externalIPs, ...i.loadBalancerIPs]) out.add(addressClaim(i.family, ip, i.protocol, i.port));
        if (i.nodePort) out.add(nodePortClaim(i.protocol, i.nodePort));
      }
    }
    return [...out];
  }

  /**
   * The service ports of one Service as of now, from its Service and slices,
   * less what an older Service holds: a port whose cluster IP:port another
   * Service holds is left out, an externalIP, load-balancer IP or NodePort
   * held by another is taken off this port only.
   */
  #compute(key: string, p: PortInfos | undefined): ServicePortState[] {
    if (!p) {
      this.#reported.delete(`Refused ${key}`);
      this.#reported.delete(`Notes ${key}`);
      return [];
    }
    const { svc } = p;
    const out: ServicePortState[] = [];
    const problems = [...p.problems];
    const sliceList = [...(this.#slicesOf.get(key)?.values() ?? [])];
    const preference = servicePreference(svc);
    const { nodeName } = this.#opts;
    const zone = this.#nodeLabels[zoneLabel] || undefined;
    const held = (claim: string, what: string): boolean => {
      const holder = this.#claims.heldBy(key, claim);
      if (holder !== undefined) problems.push(`${what} is already used by Service ${holder}`);
      return holder !== undefined;
    };
    for (const infos of p.byFamily) {
      const family = infos[0].family;
      const endpoints = collectEndpoints(sliceList, family, nodeName);
      for (let info of infos) {
        const where = (ip: string): string => `${hostPort(ip, info.port)}/${info.protocol}`;
        if (held(addressClaim(family, info.clusterIP, info.protocol, info.port), `cluster IP ${where(info.clusterIP)}`)) continue;
        const externalIPs = info.externalIPs.filter((ip) => !held(addressClaim(family, ip, info.protocol, info.port), `externalIP ${where(ip)}`));
        const loadBalancerIPs = info.loadBalancerIPs.filter((ip) => !held(addressClaim(family, ip, info.protocol, info.port), `load-balancer IP ${where(ip)}`));
        const nodePort = info.nodePort && held(nodePortClaim(info.protocol, info.nodePort), `NodePort ${info.nodePort}/${info.protocol}`) ? 0 : info.nodePort;
        if (externalIPs !== info.externalIPs || loadBalancerIPs !== info.loadBalancerIPs || nodePort !== info.nodePort) {
          info = withExternal(info, { externalIPs, loadBalancerIPs, nodePort });
        }
        const eps: readonly SliceEndpoint[] = endpoints.get(portKey(info.portName, info.protocol)) ?? [];
        out.push(resolvePort(info, categorizeEndpoints(eps, info, preference, nodeName, zone)));
      }
    }
    if (problems.length > 0) this.#refuse(key, svc, [...new Set(problems)]);
    else this.#reported.delete(`Refused ${key}`);
    this.#note(key, sliceList, out);
    return out;
  }

  /** Says once (until the reasons change) why slices or ports of a Service give no endpoints. */
  #note(key: string, slices: readonly V1EndpointSlice[], ports: readonly ServicePortState[]): void {
    const notes = unusedSlices(slices, this.#opts.families);
    for (const sp of ports) {
      const why = unmatchedPort(slices, sp.family, sp.portName, sp.protocol);
      if (why) notes.push(`${sp.name} (${sp.protocol}, IPv${sp.family}): ${why}`);
    }
    const id = `Notes ${key}`;
    if (notes.length === 0) {
      this.#reported.delete(id);
      return;
    }
    const seen = notes.join('\n');
    if (this.#reported.get(id) === seen) return;
    this.#reported.set(id, seen);
    this.#log.info({ service: key, notes }, 'endpoints not used');
  }

  /** Logs (once per version and problem list) and reports the claims a Service was refused. */
  #refuse(key: string, svc: V1Service, problems: string[]): void {
    const id = `Refused ${key}`;
    const m = svc.metadata;
    const seen = `${m?.uid ?? ''}@${m?.resourceVersion ?? ''}\n${problems.join('\n')}`;
    if (this.#reported.get(id) === seen) return;
    this.#reported.set(id, seen);
    this.#log.warn({ service: key, problems }, 'part of a Service refused');
    try {
      this.#opts.onInvalid?.({ kind: 'Service', object: svc, problems, action: 'refuse' });
    } catch (err) {
      this.#log.warn({ err, service: key }, 'onInvalid hook failed');
    }
  }

  snapshot(): { state: NodeState; changes: Changes; triggerTimes: readonly number[] } {
    const changed = new Set<string>();
    const staleUdpEndpoints: StaleUdpEndpoint[] = [];
    const staleUdpServiceIPs: StaleUdpServiceIP[] = [];
    const work = new Set(this.#allDirty ? [...this.#services.keys(), ...this.#portsOf.keys()] : this.#dirty);

    // Claims of the Services that changed first: a Service sharing an
    // address or NodePort with one of them may win or lose it now, so it is
    // computed again too.
    const infos = new Map<string, PortInfos | undefined>();
    for (const key of [...work]) {
      const p = this.#infos(key);
      infos.set(key, p);
      for (const other of this.#claims.set(key, p && rankOf(p.svc, key), Tracker.#claimsOf(p))) work.add(other);
    }

    for (const key of work) {
      const before = this.#portsOf.get(key) ?? [];
      const computed = this.#compute(key, infos.has(key) ? infos.get(key) : this.#infos(key));
      const kept: ServicePortState[] = [];
      const newKeys = new Set<string>();
      for (const next of computed) {
        newKeys.add(next.key);
        const prev = this.#state.get(next.key);
        if (prev && samePortState(prev, next)) {
          kept.push(prev); // unchanged: keep the old object so identity says so too
          continue;
        }
        addStaleUdp(prev, next, staleUdpEndpoints, staleUdpServiceIPs);
        this.#state.set(next.key, next);
        changed.add(next.key);
        kept.push(next);
      }
      for (const prev of before) {
        if (newKeys.has(prev.key)) continue;
        addStaleUdp(prev, undefined, staleUdpEndpoints, staleUdpServiceIPs);
        this.#state.delete(prev.key);
        changed.add(prev.key);
      }
      if (kept.length > 0) this.#portsOf.set(key, kept);
      else this.#portsOf.delete(key);
    }
    this.#dirty.clear();
    this.#allDirty = false;

    const full = this.#fullRequested || this.#nodeIPsChanged;
    if (full) for (const key of this.#state.keys()) changed.add(key);
    this.#fullRequested = false;
    this.#nodeIPsChanged = false;
    const triggerTimes = this.#triggerTimes;
    this.#triggerTimes = [];

    const state: NodeState = { nodeName: this.#opts.nodeName, nodeIPs: this.#nodeIPs, services: this.#state.publish() };
    return { state, changes: { full, services: changed, staleUdpEndpoints, staleUdpServiceIPs }, triggerTimes };
  }
}
