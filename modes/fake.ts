// What every mode supplies for the shared behaviour tests: a fake dataplane
// that takes the mode's real batches (through an Exec) and a tracer that
// says what becomes of a new connection's first packet. One table of
// behaviour cases (test/behaviour/) runs through every mode's fake.
import type { Exec } from '../lib/exec.ts';
import type { Family, Protocol } from '../proxy/model.ts';

export interface TracePacket {
  readonly family: Family;
  readonly src: string;
  readonly dst: string;
  readonly protocol: Protocol;
  readonly dport: number;
  /**
   * 'node': sent by a process on the node; 'pod': forwarded from a pod of
   * this cluster (its source is in the cluster CIDR); 'outside': arrives
   * from outside the cluster.
   */
  readonly from: 'node' | 'pod' | 'outside';
}

export interface TraceOutcome {
  /** 'accept' (delivered, DNATed or not), 'drop', 'reset' (TCP RST), 'icmp' (port unreachable). */
  readonly verdict: 'accept' | 'drop' | 'reset' | 'icmp';
  /** "ip:port" ("[ip6]:port") the connection goes to, when it is sent to an endpoint. */
  readonly endpoint?: string;
  /** The endpoint sees the node's address, not the client's. */
  readonly masquerade: boolean;
}

export interface FakeDataplane {
  /** Runs the mode's tools against the fake (give it as ModeOptions.exec). */
  readonly exec: Exec;
  /** Every possible fate of a new connection's first packet (no duplicates, any order). */
  trace(packet: TracePacket): TraceOutcome[];
  /**
   * The mode puts Service addresses on the node itself (IPVS's kube-ipvs0):
   * a new connection to another port of such an address is refused (TCP
   * reset, ICMP otherwise) rather than left alone, so host sockets bound to
   * every address are not reachable through it (kubernetes#72236).
   */
  readonly serviceAddressesLocal?: boolean;
}

export interface FakeOptions {
  /** Addresses the node owns (what "a local address" means to NodePorts). */
  readonly localAddresses: readonly string[];
}
