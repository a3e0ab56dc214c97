// The interface every dataplane implements. The core hands each sync a
// resolved NodeState plus the Changes since the previous one; a backend only
// translates that into kernel state, in one batch per kernel tool.
import type { Changes, Family, NodeState } from '../proxy/model.ts';

export type ProxyMode = 'iptables' | 'nftables';

/** Node-wide settings a backend needs (from flags/config, validated). */
export interface ModeOptions {
  /** IP families this node programs. */
  readonly families: readonly Family[];
  /** --cluster-cidr: traffic to a ClusterIP from outside these is masqueraded. Empty = unknown. */
  readonly clusterCIDRs: readonly string[];
  /** --masquerade-all: masquerade every packet sent to a Service. */
  readonly masqueradeAll: boolean;
  /** --nodeport-addresses as CIDRs; empty = every local address ("addrtype LOCAL"). */
  readonly nodePortAddresses: readonly string[];
  /** The fwmark bit used to tag packets for masquerade (kube-proxy default 14). */
  readonly masqueradeBit: number;
  /**
   * Where the kernel tools are. Defaults to /usr/sbin; tests point it at the
   * same tools run inside a network namespace (e.g. a wrapper with `ip netns exec`).
   */
  readonly exec?: import('../lib/exec.ts').Exec;
}

export interface SyncResult {
  readonly ok: boolean;
  /** Whether the sync was a full one (a failure makes the next one full). */
  readonly full: boolean;
  /** Milliseconds spent rendering in TypeScript. */
  readonly renderMs: number;
  /** Milliseconds spent in kernel tools. */
  readonly applyMs: number;
  /** Size of what was sent to the kernel (lines of the batch). */
  readonly batchLines: number;
  /** Number of rules (iptables) or elements+rules (nftables) kproxy now holds, per table. */
  readonly ruleCounts: Readonly<Record<string, number>>;
  readonly error?: Error;
}

export interface Backend {
  readonly mode: ProxyMode;
  /**
   * Bring the kernel in line with `state`. Called with full changes on the
   * first sync; a backend must then adopt (not flush) what a previous kproxy
   * left, so traffic never sees an empty table.
   */
  sync(state: NodeState, changes: Changes): Promise<SyncResult>;
  /** Desired rules for `state`, exactly as the batch of a full sync (for dump). */
  render(state: NodeState): string;
  /**
   * The desired kernel objects of one service port (`key` of
   * state.services), as lines of the mode's own syntax: its own chains and
   * their rules, its rules in shared chains, its set/map elements one per
   * line. Costs O(that port), not O(table); [] when the key is absent or of
   * a family this backend does not program. Optional: `explain` falls back
   * to saying the mode cannot describe one port.
   */
  describeService?(state: NodeState, key: string): string[];
  /** What the kernel holds of kproxy's own objects, as the kernel tool prints it. */
  readKernel(): Promise<string>;
  /**
   * A cheap check, run every syncPeriod, that nobody removed kproxy's rules
   * behind its back (a canary chain or table gone). True forces a full sync.
   * Must not read the whole table.
   */
  drifted(): Promise<boolean>;
  /** Remove everything this mode owns, and nothing else. */
  cleanup(): Promise<void>;
}
