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
}

export interface FakeOptions {
  /** Addresses the node owns (what "a local address" means to NodePorts). */
  readonly localAddresses: readonly string[];
}

const wrapped = new WeakMap<Exec, Exec>();

/**
 * An exec that runs `exec` through `around` (a test recording what the
 * mode sends), still known as `exec`: a mode whose fake keeps more than
 * what its tools receive (a forwarder's table) finds its fake through
 * unwrapExec().
 */
export function wrapExec(exec: Exec, around: (exec: Exec, ...call: Parameters<Exec>) => ReturnType<Exec>): Exec {
  const w: Exec = (tool, args, input) => around(exec, tool, args, input);
  wrapped.set(w, unwrapExec(exec));
  return w;
}

/** The exec a wrapExec() wrapper (or a wrapper of one) was made from; `exec` itself otherwise. */
export function unwrapExec(exec: Exec): Exec {
  return wrapped.get(exec) ?? exec;
}
