// "Where can this packet go" over the fake IPVS kernel: the virtual
// service a new connection hits, whether IPVS refuses it (no real server
// with a weight above 0, or a hash scheduler without fallback whose server
// is drained), and the real servers it may reach under the service's
// scheduler (schedulers.ts). Persistence (ClientIP affinity) is not
// modelled: the tracer answers for a client without a template.
import type { FakeIpvsKernel } from './fake-kernel.ts';
import type { IpvsProtocol, Scheduler, ServerKey, ServiceKey } from './ipvsadm.ts';
import { schedule } from './schedulers.ts';

export interface IpvsPacket {
  readonly src: string;
  /** The client's port: only sh-port and mh-port hash it (default 40000). */
  readonly srcPort?: number;
  readonly dst: string;
  readonly protocol: IpvsProtocol;
  readonly dport: number;
}

export interface TracedServer extends ServerKey {
  readonly weight: number;
  /** Share of new connections over many (rr, wrr). */
  readonly share?: number;
}

export interface IpvsTrace {
  /** no-service: IPVS leaves the packet alone; refused: the virtual service has nowhere to send it. */
  readonly verdict: 'no-service' | 'refused' | 'scheduled';
  readonly service?: ServiceKey;
  readonly scheduler?: Scheduler;
  /** The destination is an address on one of the kernel's links (kube-ipvs0): traffic from elsewhere reaches IPVS. */
  readonly local: boolean;
  /** Real servers a new connection may reach now. */
  readonly servers: readonly TracedServer[];
  /** The one the kernel picks next, when the state alone decides it (sh, dh, mh, and the least-connection schedulers). */
  readonly next?: ServerKey;
  readonly reason: string;
}

export function traceIpvs(kernel: FakeIpvsKernel, packet: IpvsPacket): IpvsTrace {
  const local = [...kernel.links.values()].some((l) => l.addresses.includes(packet.dst));
  const key: ServiceKey = { protocol: packet.protocol, address: packet.dst, port: packet.dport };
  const svc = kernel.service(key);
  if (!svc) return { verdict: 'no-service', local, servers: [], reason: 'no virtual service for this address, protocol and port' };
  const choice = schedule(svc.spec.scheduler, svc.spec.flags ?? [], svc.servers, { src: packet.src, srcPort: packet.srcPort ?? 40000, dst: packet.dst });
  const base = { service: svc.key, scheduler: svc.spec.scheduler, local };
  if (choice.candidates.length === 0) {
    const reason = svc.servers.some((s) => s.weight > 0)
      ? `${svc.spec.scheduler} maps this client to a real server with weight 0 and has no fallback`
      : svc.servers.length === 0 ? 'the virtual service has no real servers' : 'every real server has weight 0';
    return { verdict: 'refused', ...base, servers: [], reason };
  }
  const servers = choice.candidates.map((s, i) => ({
    address: s.address, port: s.port, weight: s.weight,
    ...(choice.shares ? { share: choice.shares[i] } : {}),
  }));
  const next = choice.next ? { address: choice.next.address, port: choice.next.port } : undefined;
  return { verdict: 'scheduled', ...base, servers, ...(next ? { next } : {}), reason: `scheduled by ${svc.spec.scheduler}` };
}
