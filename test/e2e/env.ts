// Where the scenario table (scenarios.ts) runs: network namespaces on the
// host, or inside a user-mode-linux guest for modes the host kernel cannot
// run (IPVS). A scenario speaks only to this interface, so every registered
// mode meets the same cases with real traffic, whichever kernel it needs.
import type { ProxyMode } from '../../modes/registry.ts';
import type { ClientResult, ConnectOptions, ContinuousClient, HttpResult, UdpSession } from '../helpers/traffic.ts';

export type From = 'client' | 'node';

/** A running kproxy process. */
export interface RunningKproxy {
  readonly args: readonly string[];
  /** Everything it wrote so far (pino JSON lines). */
  logs(): string;
  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: string | null }>;
  syncCount(): Promise<number>;
  waitForSyncAfter(count: number): Promise<number>;
}

export interface E2eEnv {
  /** "host" or "uml", for titles and logs. */
  readonly name: string;
  /** Makes `count` connections (or UDP datagrams) from the client namespace or the node itself. */
  connect(from: From, host: string, port: number, opts?: ConnectOptions): Promise<ClientResult>;
  /** Connects again and again from the client namespace until stopped. */
  continuous(host: string, port: number, opts?: { intervalMs?: number; timeoutMs?: number }): Promise<ContinuousClient>;
  httpGet(from: From, url: string): Promise<HttpResult>;
  /** One UDP socket from the client namespace that stays open between datagrams. */
  udpSession(host: string, port: number): Promise<UdpSession>;
  /**
   * Replaces the source file kproxy reads, atomically, so that kproxy sees
   * the change (inside a guest, a change made on the host side of hostfs
   * raises no inotify event: the guest writes it).
   */
  writeSource(path: string, text: string): Promise<void>;
  /** Starts kproxy in the node namespace reading `sourceFile`. */
  startKproxy(mode: ProxyMode, sourceFile: string): Promise<RunningKproxy>;
  /** A one-shot kproxy command in the node namespace (--cleanup, dump, ...). */
  runKproxy(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Everything any mode could have written into the node's kernel, as text (rules, tables, virtual servers, sets, addresses). */
  kernelText(): Promise<string>;
  /** What the node holds of `mode` ('' when nothing); `before` is a snapshot taken while the mode ran. */
  leftovers(mode: ProxyMode, before: KernelSnapshot): Promise<string>;
  /** What the node holds now, while `running` runs, to compare with after a mode is gone. */
  snapshot(running: ProxyMode): Promise<KernelSnapshot>;
  /** Another registered mode that runs here (for the mode-switch case). */
  otherMode(mode: ProxyMode): ProxyMode;
}

/** Whatever a mode's leftovers check needs to know about the state while it ran. */
export interface KernelSnapshot {
  /** The mode that ran when the snapshot was taken. */
  readonly running: ProxyMode;
  /** nftables tables ("family name"). */
  readonly nftTables: readonly string[];
}
