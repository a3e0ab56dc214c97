// What one service port asks of the kernel in IPVS mode: its virtual
// services with their real servers, its ipset entries and the addresses it
// puts on kube-ipvs0, all from the decisions proxy/ made (model.ts); the
// mode translates them and decides nothing about Kubernetes itself.
//
//  - The cluster IP: a virtual service with the internal endpoints, or a
//    verdict entry (reject or drop) when there are none.
//  - Each external address (externalIPs, load-balancer IPs, the NodePort on
//    every NodePort address): a virtual service with the endpoints for
//    traffic from outside. When traffic from pods and the node uses other
//    endpoints (externalTrafficPolicy Local), that traffic carries the
//    port's firewall mark and meets a firewall-mark virtual service with its
//    own endpoints instead; outside traffic without a local endpoint is
//    dropped.
//  - Set entries for masquerade, hairpin (this node's endpoints), the
//    source-range firewall and health-check NodePorts.
import { canonicalIP, hostCIDR } from '../../lib/net.ts';
import type { Endpoint, Family, ServicePortState } from '../../proxy/model.ts';
import { unsafeValue } from '../values.ts';
import { checkHostAddress, networkOf } from './checks.ts';
import { validateIp } from './ip-batch.ts';
import { validateIpset, type SetEntry, type SkbMark } from './ipset.ts';
import {
  maxPersistence, schedulerFlags, validateIpvs, vsId,
  type IpvsProtocol, type Scheduler, type SchedulerFlag, type ServerKey, type ServiceKey, type ServiceSpec,
} from './ipvsadm.ts';
import { dummyDevice, fwmarkMask, setName, type SetRole } from './names.ts';
import { memberId } from './state.ts';

export interface PortContext {
  readonly family: Family;
  /** Addresses of this family the NodePorts answer on. */
  readonly nodePortAddrs: readonly string[];
  /** The node's addresses outside kube-ipvs0: a Service address among them is not put on kube-ipvs0. */
  readonly localAddrs: ReadonlySet<string>;
  readonly defaultScheduler: Scheduler;
  /** Schedulers whose kernel module is known to be missing. */
  readonly missingSchedulers: ReadonlySet<string>;
  readonly masqueradeBit: number;
  /** The firewall mark of a service port that needs one. */
  fwmark(key: string): number;
}

export interface WantedVs {
  readonly id: string;
  readonly key: ServiceKey;
  /** The service port's protocol (a firewall-mark service carries its port's). */
  readonly protocol: IpvsProtocol;
  readonly spec: ServiceSpec;
  readonly servers: readonly ServerKey[];
}

export interface WantedEntry {
  /** "SET ENTRY": one member of one set. */
  readonly id: string;
  readonly set: string;
  readonly entry: SetEntry;
  readonly skbmark?: SkbMark;
}

export interface PortWant {
  readonly vs: readonly WantedVs[];
  readonly entries: readonly WantedEntry[];
  /** Addresses this port needs on kube-ipvs0. */
  readonly addrs: readonly string[];
  /** Whether the port uses a firewall mark (in-cluster traffic to its external addresses). */
  readonly fwmark: boolean;
  /** What the port asked for that IPVS cannot do, and what is done instead. */
  readonly warnings: readonly string[];
}

export class RefusedPortError extends Error {}

function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  return a === b || (a.length === b.length && a.every((e, i) => e.ip === b[i].ip && e.port === b[i].port));
}

/** The scheduler, flags and persistence of the port's virtual services. */
export function portSpec(s: ServicePortState, ctx: Pick<PortContext, 'defaultScheduler' | 'missingSchedulers'>, warnings: string[]): ServiceSpec {
  let scheduler: Scheduler = ctx.defaultScheduler;
  let flags: SchedulerFlag[] = [];
  const choice = s.scheduler;
  if (choice) {
    if (choice.name === 'p2c') {
      warnings.push(`scheduler p2c is the userspace mode's and IPVS has none: the node's default (${ctx.defaultScheduler}) applies`);
    } else if (ctx.missingSchedulers.has(choice.name)) {
      warnings.push(`scheduler ${choice.name}: its kernel module (ip_vs_${choice.name}) is missing on this node: the node's default (${ctx.defaultScheduler}) applies`);
    } else {
      scheduler = choice.name;
      const known: readonly string[] = scheduler === 'sh' || scheduler === 'mh' ? schedulerFlags[scheduler] : [];
      for (const f of choice.flags) {
        const flag = `${scheduler}-${f}`;
        if (known.includes(flag)) flags.push(flag as SchedulerFlag);
        else warnings.push(`scheduler flag ${f} does not apply to ${scheduler}: left out`);
      }
    }
  }
  flags = flags.sort();
  return {
    scheduler,
    ...(flags.length ? { flags } : {}),
    ...(s.affinityTimeoutSeconds > 0 ? { persistence: Math.min(s.affinityTimeoutSeconds, maxPersistence) } : {}),
  };
}

/**
 * Everything one service port asks of the kernel. Throws RefusedPortError
 * when a value cannot be written safely: the plan leaves the port out.
 */
export function portWant(s: ServicePortState, ctx: PortContext): PortWant {
  const unsafe = unsafeValue(s);
  if (unsafe) throw new RefusedPortError(unsafe);
  const f = ctx.family;
  const proto = s.protocol.toLowerCase() as IpvsProtocol;
  const canon = (ip: string): string => (f === 6 ? canonicalIP(ip) : ip);
  const warnings: string[] = [];
  const spec = portSpec(s, ctx, warnings);
  const vs: WantedVs[] = [];
  const entries: WantedEntry[] = [];
  const addrs: string[] = [];
  const servers = (eps: readonly Endpoint[]): ServerKey[] => {
    const seen = new Set<string>();
    const out: ServerKey[] = [];
    for (const e of eps) {
      const address = canon(e.ip);
      const id = `${address}|${e.port}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push({ address, port: e.port });
    }
    return out;
  };
  const addVs = (key: ServiceKey, eps: readonly ServerKey[]): void => {
    validateIpvs({ verb: 'add', object: 'service', service: key, spec });
    for (const server of eps) validateIpvs({ verb: 'add', object: 'server', service: key, server, weight: 1 });
    vs.push({ id: vsId(key), key, protocol: proto, spec, servers: eps });
  };
  const entry = (role: SetRole, e: SetEntry, skbmark?: SkbMark): void => {
    const set = setName(role, f);
    validateIpset({ verb: 'add', set, entry: e, ...(skbmark ? { skbmark } : {}) });
    entries.push({ id: memberId(set, e, skbmark), set, entry: e, ...(skbmark ? { skbmark } : {}) });
  };
  const onDummy = (ip: string): void => {
    if (ctx.localAddrs.has(ip) || addrs.includes(ip)) return;
    validateIp({ verb: 'add', object: 'address', device: dummyDevice, address: ip });
    addrs.push(ip);
  };

  try {
    const clusterIP = canon(s.clusterIP);
    checkHostAddress('cluster IP', clusterIP);
    const verdict: SetRole = s.noEndpointVerdict === 'reject' ? 'reject' : 'drop';
    const at = (ip: string, port: number): SetEntry => ({ ip, protocol: proto, port });

    // The cluster IP.
    onDummy(clusterIP);
    entry('clusterIP', at(clusterIP, s.port));
    const internal = servers(s.internalEndpoints);
    if (internal.length > 0) addVs({ protocol: proto, address: clusterIP, port: s.port }, internal);
    else entry(verdict, at(clusterIP, s.port));

    // Hairpin: this node's endpoints reaching themselves through the Service.
    for (const e of s.allReachableEndpoints) {
      if (!e.isLocal) continue;
      const ip = canon(e.ip);
      entry('loopback', { ip, protocol: proto, port: e.port, ip2: ip });
    }

    // The external addresses.
    if (s.externallyReachable) {
      const outside = servers(s.externalEndpoints);
      const inCluster = servers(s.externalFromClusterEndpoints);
      const split = !sameEndpoints(s.externalEndpoints, s.externalFromClusterEndpoints) && inCluster.length > 0;
      const mark = split ? ctx.fwmark(s.key) : 0;
      const skbmark: SkbMark | undefined = split ? { value: mark, mask: fwmarkMask(ctx.masqueradeBit) } : undefined;
      if (split) addVs({ fwmark: mark, family: f }, inCluster);
      const dest = (ip: string, port: number): void => {
        if (outside.length > 0) addVs({ protocol: proto, address: ip, port }, outside);
        else if (split) entry('externalDrop', at(ip, port));
        else entry(verdict, at(ip, port));
        if (skbmark) entry('fwmark', at(ip, port), skbmark);
      };
      const local = !s.masqueradeExternal;
      for (const raw of s.externalIPs) {
        const ip = canon(raw);
        onDummy(ip);
        dest(ip, s.port);
        entry(local ? 'externalIPLocal' : 'externalIP', at(ip, s.port));
      }
      // A source range of /0 lets everyone in: no firewall then.
      const firewall = s.firewall && !s.firewallSources.some((c) => c.endsWith('/0'));
      for (const raw of s.loadBalancerIPs) {
        const ip = canon(raw);
        onDummy(ip);
        dest(ip, s.port);
        entry('loadBalancer', at(ip, s.port));
        if (local) entry('loadBalancerLocal', at(ip, s.port));
        if (firewall) {
          entry('loadBalancerFW', at(ip, s.port));
          const lbSelf = new Set(s.loadBalancerIPs.map((x) => hostCIDR(canon(x))));
          for (const raw of s.firewallSources) {
            const src = canonNet(raw);
            if (lbSelf.has(src)) entry('loadBalancerSourceIP', { ...at(ip, s.port), ip2: src.slice(0, src.lastIndexOf('/')) });
            else entry('loadBalancerSourceCIDR', { ...at(ip, s.port), net: src });
          }
        }
      }
      if (s.nodePort > 0) {
        for (const ip of ctx.nodePortAddrs) dest(ip, s.nodePort);
        const suffix = proto === 'tcp' ? 'TCP' : proto === 'udp' ? 'UDP' : 'SCTP';
        entry(`nodePort${local ? 'Local' : ''}${suffix}` as SetRole, { port: s.nodePort });
      }
    }
    if (s.healthCheckNodePort > 0) entry('healthCheckNodePort', { port: s.healthCheckNodePort });
  } catch (e) {
    if (e instanceof RefusedPortError) throw e;
    throw new RefusedPortError((e as Error).message);
  }
  return { vs, entries, addrs, fwmark: vs.some((v) => 'fwmark' in v.key), warnings };
}

/** A CIDR as ipset writes it: canonical address text, host bits cleared. */
function canonNet(cidr: string): string {
  const i = cidr.lastIndexOf('/');
  const len = Number(cidr.slice(i + 1));
  return `${networkOf(canonicalIP(cidr.slice(0, i)), len)}/${len}`;
}
