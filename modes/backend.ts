// The contract between the core and every dataplane. The core hands each
// sync a resolved NodeState plus the Changes since the previous one; a mode
// plans the work against its own record of what it applied (pure: the
// record does not change), then applies it (one batch per kernel tool, or
// one update of its forwarder) and commits the record only when the
// dataplane accepted it. modes/sync.ts runs and times that cycle for the
// runner, the commands and the tests alike.
import type { Registry } from 'prom-client';
import type { Exec } from '../lib/exec.ts';
import type { Logger } from '../lib/log.ts';
import type { Changes, Family, NodeState, Protocol } from '../proxy/model.ts';
import type { FakeDataplane, FakeOptions } from './fake.ts';
import type { RefusedPort } from './values.ts';

/** Node-wide settings a backend needs (from flags and config, validated). */
export interface ModeOptions {
  /** IP families this node programs. */
  readonly families: readonly Family[];
  /** --cluster-cidr: traffic to a ClusterIP from outside these is masqueraded. Empty = unknown. */
  readonly clusterCIDRs: readonly string[];
  /** --masquerade-all: masquerade every packet sent to a Service. */
  readonly masqueradeAll: boolean;
  /** --nodeport-addresses as CIDRs; empty = every local address. */
  readonly nodePortAddresses: readonly string[];
  /** The fwmark bit used to tag packets for masquerade (kube-proxy default 14). */
  readonly masqueradeBit: number;
  /**
   * The mode's own settings (its descriptor's `settings`), validated, by
   * key; a setting left out has its default.
   */
  readonly settings?: Readonly<Record<string, unknown>>;
  /**
   * Where the kernel tools run. Defaults to this host; tests point it at a
   * network namespace (netnsExec) or a fake kernel.
   */
  readonly exec?: Exec;
}

/** What one planned sync will do. Each mode extends it with its batches. */
export interface Plan {
  /** A full plan rewrites everything the mode owns and removes what is stale. */
  readonly full: boolean;
  /** Units of work it sends (batch lines, set elements, listener changes), for logs and benchmarks. */
  readonly size: number;
  /** Service ports left out because a value could not be written safely (reported by the runner). */
  readonly refused?: readonly RefusedPort[];
  /**
   * Service ports programmed with a fallback because the mode cannot do what
   * they ask (a scheduler it lacks); reported by the runner like refusals.
   */
  readonly warnings?: readonly RefusedPort[];
  /**
   * What it restores of changes someone else made (found by checkDrift or
   * watchDrift); counted and logged once the dataplane accepted the plan.
   */
  readonly repairs?: readonly Damage[];
}

/**
 * One object kproxy owns that someone else changed (flushed, deleted,
 * rewritten), as a repair names it.
 */
export interface Damage {
  /**
   * Its kind, the `what` label of kubeproxy_sync_proxy_rules_repairs_total:
   * 'chain' (its rules rewritten), 'jump' (a jump from a built-in chain put
   * back), 'canary', 'element' (a map or set element put back or removed),
   * 'full' (too broad or unknown to repair object by object: a full sync),
   * or a mode's own (an IPVS virtual server, an ipset entry).
   */
  readonly what: string;
  /** The object in the mode's own words, for the log ("nat KUBE-SVC-ABC", "ip kproxy service-ips 10.96.0.10 . tcp . 80"). */
  readonly object: string;
}

/** What a drift check or watch found. The backend has queued the repair: its next plan makes it. */
export interface DriftReport {
  readonly damage: readonly Damage[];
  /** Set when the next plan must be full, with the reason. */
  readonly full?: string;
}

/** A running watch for changes made by others (see Backend.watchDrift). */
export interface DriftWatch {
  /** Resolves once the watch sees every change, or could not start; the first sync waits for it (bounded). */
  readonly ready: Promise<void>;
  /** Stops watching and ends any process the watch runs. */
  stop(): Promise<void>;
}

export interface Backend<P extends Plan = Plan> {
  readonly mode: string;
  /**
   * Reads the kernel facts the next plan needs and nothing more (on the
   * first sync, what a previous kproxy left, to adopt it without a flush).
   * Optional; called right before plan() with the same changes.
   */
  prepare?(changes: Changes): Promise<void>;
  /**
   * The work that brings the dataplane from the mode's record to `state`.
   * Pure: neither the record nor the dataplane changes. Full when
   * `changes.full` or when the record is unknown (start-up, after a failed
   * apply). Throws only on a bug.
   */
  plan(state: NodeState, changes: Changes): P;
  /**
   * Sends the plan; commits the record only when the dataplane accepted it.
   * On failure the record is forgotten (the next plan is full) and the
   * error is thrown.
   */
  apply(plan: P): Promise<void>;
  /** Objects kproxy holds in the dataplane, per table (or listener kind), as last applied. */
  owned(): Readonly<Record<string, number>>;
  /** The desired dataplane state for `state`, in the mode's own syntax (what `dump` prints). */
  render(state: NodeState): string;
  /**
   * The desired objects of one service port (`key` of state.services), in
   * the mode's own syntax, one per line. Costs O(that port); [] when the key
   * is absent or of a family this backend does not program.
   */
  describeService?(state: NodeState, key: string): string[];
  /** What the dataplane holds of kproxy's own objects, as its tool prints it (dump --live, diff). */
  readKernel?(): Promise<string>;
  /**
   * The periodic check, run every syncPeriod beside syncs (never holding
   * one up), for changes someone else made to what kproxy owns: canaries,
   * jumps from built-in chains, or (where reading is cheap) the content of
   * every owned chain against the record. What it finds is queued in the
   * backend and repaired by the next plan, targeted where it can say what
   * changed; the runner asks for that sync (full when `full` is set). A
   * check that overlapped an apply reports nothing (the next one looks
   * again). Must not read whole tables where that is expensive.
   */
  checkDrift?(): Promise<DriftReport>;
  /**
   * Starts watching the dataplane for changes others make, as they happen
   * (nf_tables events, modes/nft-monitor.ts). Each finding is queued like
   * checkDrift's and reported through `onDrift`; the runner then asks for a
   * sync. The runner starts it before the first sync and stops it on stop.
   * Optional: modes with no event source rely on checkDrift.
   */
  watchDrift?(onDrift: (report: DriftReport) => void): DriftWatch;
  /**
   * The older, coarser form of checkDrift: true forces a full sync. Used
   * only when checkDrift is absent.
   */
  drifted?(): Promise<boolean>;
  /** Remove everything this mode owns, and nothing else. */
  cleanup(): Promise<void>;
  /** Stop any work of its own (a forwarder's sockets); kernel state stays. Optional. */
  close?(): Promise<void>;
  /** Registers metrics of the mode's own (a forwarder's traffic counters) on the proxy's registry. Optional. */
  registerMetrics?(registry: Registry): void;
  /**
   * What one service port (`key` of state.services) looks like now, beyond
   * its desired objects: a heading line, then one line each (IPVS: the
   * kernel's virtual servers with connections per real server; a forwarder:
   * what the kproxy running on this node serves and how its endpoints fare,
   * asked from explain's own process). O(that port). Throws when the state
   * cannot be read here. Optional.
   */
  describeLive?(state: NodeState, key: string): Promise<string[]>;
}

/** One setting of a mode of its own: a flag and/or a field of its config block. */
export interface ModeSetting {
  /** Key in ModeOptions.settings. */
  readonly key: string;
  /** The flag, without dashes (e.g. "ipvs-scheduler"). */
  readonly flag?: string;
  /** The field of the mode's KubeProxyConfiguration block (e.g. "scheduler" for ipvs.scheduler). */
  readonly field?: string;
  /**
   * A top-level KubeProxyConfiguration field read as well, where kube-proxy
   * kept the setting (e.g. udpIdleTimeout); the block's field wins.
   */
  readonly rootField?: string;
  readonly kind: 'string' | 'bool' | 'int' | 'duration' | 'stringList' | 'durationList';
  /** The value when neither the flag nor the file sets it (durations in ms, duration lists as lists of ms). */
  readonly default: unknown;
  readonly help: string;
  /** A problem with a parsed value (durations in ms), or undefined when it is valid. */
  validate?(value: unknown): string | undefined;
  /**
   * The node-wide setting this one replaces in this mode when set (kube-proxy's
   * --ipvs-sync-period stands for --iptables-sync-period in ipvs mode).
   */
  readonly replaces?: 'syncPeriod' | 'minSyncPeriod';
}

/** Metric names a mode reports under, kube-proxy's where it has them. */
export interface ModeMetricNames {
  /** Counter of failed syncs (kube-proxy: ..._iptables_restore_failures_total). */
  readonly syncFailures: { readonly name: string; readonly help: string };
  /** Gauge of owned objects, labelled by `table` (from Backend.owned()); none when the mode has no such metric. */
  readonly owned?: { readonly name: string; readonly help: string };
}

/**
 * Where a mode honestly behaves unlike a kernel dataplane. The shared
 * behaviour and kernel tests state each difference a mode declares here
 * rather than skip a case.
 */
export interface ModeDifferences {
  /** Endpoints always see the node's address as the source (a forwarder opens connections of its own). */
  readonly sourceIsNode?: boolean;
  /**
   * Service addresses become local addresses of the node: a port of one
   * that no Service serves is answered by the kernel (TCP reset, ICMP port
   * unreachable) instead of being left alone.
   */
  readonly serviceAddressesLocal?: boolean;
  /** Protocols the mode does not serve: the core refuses those ports and reports them (log, Warning Event). */
  readonly unservedProtocols?: readonly Protocol[];
  /** Traffic flows only while kproxy runs (a forwarder), not from kernel state left behind. */
  readonly needsProcess?: boolean;
  /**
   * A TCP client refused (no endpoint) sees its connect succeed and then a
   * reset, as fast (a listening socket cannot refuse a SYN): ECONNRESET
   * where a kernel mode gives ECONNREFUSED.
   */
  readonly resetAfterAccept?: boolean;
}

/**
 * Everything the core knows of a mode: one of these per folder in modes/,
 * listed in modes/registry.ts and nowhere else.
 */
export interface ModeDescriptor {
  readonly name: string;
  /** One line for --help. */
  readonly summary: string;
  /**
   * The KubeProxyConfiguration block this mode reads (its sync periods and
   * masquerade settings, when it sets them, and its own settings' fields).
   */
  readonly configBlock: string;
  readonly settings: readonly ModeSetting[];
  /**
   * Kernel tools the mode runs for a family (checked at start-up: missing
   * IPv4 tools stop kproxy; missing IPv6 tools turn IPv6 off with a warning).
   */
  tools(family: Family): readonly string[];
  /**
   * Why this kernel cannot run the mode at all (no IPVS, no nf_tables), or
   * undefined. Start-up stops with it; --cleanup and a mode switch skip the
   * mode, since nothing of it can be there. Optional.
   */
  unsupported?(exec: Exec): Promise<string | undefined>;
  /** Checks at start-up that depend on the mode's settings (a scheduler the kernel lacks); throws a KproxyError. Optional. */
  checkStart?(input: { readonly settings: Readonly<Record<string, unknown>>; readonly exec: Exec; readonly masqueradeBit: number }): Promise<void>;
  /**
   * Kernel modules the mode cannot work without (e.g. ip_vs), as the
   * operator's list. `unsupported` asks the running kernel itself; the
   * kernel tests place each mode by it (this host's namespaces, or
   * user-mode-linux for IPVS).
   */
  readonly kernelModules: readonly string[];
  readonly metrics: ModeMetricNames;
  create(opts: ModeOptions, log: Logger): Backend;
  /** Removes everything this mode owns, and nothing else (--cleanup, switching modes). */
  cleanup(opts: ModeOptions, log: Logger): Promise<void>;
  /** readKernel() text in a canonical form, so `diff` compares as text. */
  normalizeListing(text: string): string;
  /** A fake dataplane with a tracer, for the behaviour table every mode must pass. */
  fake(opts: FakeOptions): FakeDataplane;
  /** Where it behaves unlike a kernel dataplane; absent: nowhere. */
  readonly differences?: ModeDifferences;
}
