// Watches every change to nf_tables in kproxy's network namespace. Two
// sources print each committed transaction's changes followed by a line
// naming the process that made it:
//
//   delete rule ip kproxy services 2
//   # new generation 42 by process 8077 (nft)
//
// kproxy's own listener (modes/nft-events.ts: a small addon on the kernel's
// nf_tables event group, keeping nothing) by default; `nft monitor` when the
// addon is not built (it first reads the whole ruleset into its cache and
// keeps it: about 200 MB at 10,000 Services in nftables mode, 430 MB on
// iptables-nft). The listener coalesces runs of like changes into one line
// with a count, and gives element keys (raw, in hex) only for short runs.
//
// Transactions of the tools kproxy itself started (its Exec remembers
// their process ids) are its own; any other transaction that touched a
// watched table is handed to the mode, which works out what to repair. Both
// the nftables mode and the iptables mode on iptables-nft (nf_tables
// underneath) use it; iptables-legacy, ipset and IPVS make no nf_tables
// events, so modes built on them rely on their periodic check alone.
//
// What can be missed is reported as such (`onBlind`): the watch starting
// again after it ended, or the kernel dropping events. A socket's receive
// buffer overflows when one transaction changes more objects than it holds
// (nft monitor's 32 MB: kproxy's own full sync at 10,000 Services, about
// 100,000 objects); events are then dropped, generation lines among them.
// Every commit ends with one, numbered in
// sequence, so a gap in the numbers says how many transactions went
// unseen; when kproxy's own tools that have not been seen yet account for
// all of them, the loss was kproxy's own (`onOwnLoss`), otherwise someone
// else's changes may be missing. After a loss, `onProbe` asks for a tiny
// transaction of kproxy's own, so that the next generation line (and any
// gap) comes at once.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { ownToolPrefix, type ChildRecord, type Exec, type StreamChild } from '../lib/exec.ts';
import type { Logger } from '../lib/log.ts';
import type { DriftReport } from './backend.ts';
import { Supervisor, type SupervisorTimers } from '../lib/supervisor.ts';
import { listenerCommand, lostLine, nftEventsAddon, nftEventsAddonPath, parseListenerEvent, parseReady, type ListenerOptions } from './nft-events.ts';

/** One change line (of `nft monitor`, or a run of like changes of the listener). */
export interface NftEvent {
  /** add, insert, replace, create, delete, flush, destroy. */
  readonly verb: string;
  /** table, chain, rule, set, map, element, flowtable, counter, ... (the listener says set for maps, obj for counters, quotas...) */
  readonly object: string;
  readonly family: string;
  readonly table: string;
  /** The chain of a rule, the set of an element, the object's name; '' for a table. */
  readonly name: string;
  /** nft monitor: the rest of the line (rule text and handle, the elements in braces, a chain's spec); '' from the listener. */
  readonly rest: string;
  /** The listener: how many like changes the line stands for. */
  readonly count?: number;
  /** The listener: each changed element's key as raw bytes in hex, when the run was short enough to list them. */
  readonly keys?: readonly string[];
}

/** Where the events come from: kproxy's own listener, or `nft monitor` (the addon is not built). */
export type NftEventSource = 'listener' | 'nft monitor';

/** A transaction of someone else's, with the element changes nft could not name in it. */
interface HeldGeneration extends NftGeneration {
  readonly unknown: number;
}

/** One committed transaction as the monitor saw it: only its events in watched tables. */
export interface NftGeneration {
  readonly id: number;
  readonly pid: number;
  /** The process name the kernel reports (at most 15 bytes). */
  readonly comm: string;
  readonly events: readonly NftEvent[];
}

const eventLine = /^(add|insert|replace|create|delete|flush|destroy|reset) (\S+) (\S+) (\S+)(?: (\S+))?(?: (.*))?$/;
const trailerLine = /^# new generation (\d+) by process (\d+) \((.*)\)\s*$/;
const lossLine = /^# ERROR: We lost some netlink events/;
const unknownSetLine = /^W: Received event for an unknown set/;

export function parseEvent(line: string): NftEvent | undefined {
  const m = eventLine.exec(line);
  if (!m) return undefined;
  const [, verb, object, family, table, name = '', rest = ''] = m;
  if (object === 'table') return { verb, object, family, table, name: '', rest: [name, rest].filter(Boolean).join(' ') };
  return { verb, object, family, table, name, rest };
}

/** A change line of kproxy's listener as an NftEvent (no rule text; a count, and element keys when short). */
export function listenerEvent(line: string): NftEvent | undefined {
  const e = parseListenerEvent(line);
  return e && { ...e, rest: '' };
}

export function parseTrailer(line: string): { id: number; pid: number; comm: string } | undefined {
  const m = trailerLine.exec(line);
  return m ? { id: Number(m[1]), pid: Number(m[2]), comm: m[3] } : undefined;
}

/** The family and table of an event line, without parsing the rest (most lines are kproxy's own). */
function tableOf(line: string): [string, string] | undefined {
  let i = line.indexOf(' ');
  if (i < 0) return undefined;
  i = line.indexOf(' ', i + 1);
  if (i < 0) return undefined;
  const j = line.indexOf(' ', i + 1);
  if (j < 0) return undefined;
  let k = line.indexOf(' ', j + 1);
  if (k < 0) k = line.length;
  return [line.slice(i + 1, j), line.slice(j + 1, k)];
}

/**
 * How many transactions a tool of kproxy's may commit: what the caller
 * said (ExecHint), else `nft -f` one, iptables-nft-restore one per table
 * section (at most three), one-off iptables commands one; listings none.
 */
function commitsOf(r: ChildRecord): number {
  if (r.commits !== undefined) return r.commits;
  if (r.comm === 'nft' || r.comm === 'kproxy-nft') return r.args[0] === '-f' ? 1 : 0;
  if (/^(ip6?tables-nft-r|ip6?tables-restor|kproxy-ip6?tr$)/.test(r.comm)) return 3;
  if (/^(ip6?tables(-nft)?|kproxy-ip6?t)$/.test(r.comm)) return r.args.some((a) => /^-[ADIRFZNXPE]$/.test(a)) ? 1 : 0;
  return 0;
}

// NFNLGRP_NFTABLES is netlink group 7: bit 6 of the Groups column.
const nftablesGroupBit = 1 << 6;

/**
 * Whether process `pid` holds a netfilter netlink socket subscribed to
 * nf_tables events: the moment `nft monitor` starts seeing changes (it
 * first reads the whole ruleset, which takes a second with 100,000 map
 * elements, and only then subscribes). Read from /proc, so a test or the
 * first sync never has to make a change just to find out.
 */
export function subscribedToNftables(pid: number): boolean {
  return nftablesSocket(pid) !== undefined;
}

/**
 * Bytes queued on the nf_tables event socket of process `pid` (undefined
 * when it has none). After the kernel dropped an event it drops every
 * later one too, until this queue has been read empty.
 */
export function queuedBytes(pid: number): number | undefined {
  return nftablesSocket(pid)?.rmem;
}

function nftablesSocket(pid: number): { rmem: number } | undefined {
  const inodes = new Set<string>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  if (inodes.size === 0) return undefined;
  let table: string;
  try {
    table = readFileSync(`/proc/${pid}/net/netlink`, 'utf8');
  } catch {
    return undefined;
  }
  // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
  for (const line of table.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && f[1] === '12' && inodes.has(f[9]) && (parseInt(f[3], 16) & nftablesGroupBit) !== 0) return { rmem: Number(f[4]) };
  }
  return undefined;
}

export interface NftMonitorListener {
  /** A transaction of another process changed a watched table. */
  onForeign(generation: NftGeneration): void;
  /**
   * The monitor sees changes from now on. `restart`: it had been watching
   * before and ended, so changes in between were missed.
   */
  onReady(restart: boolean): void;
  /** Changes to watched tables may have been missed (events dropped, origin unknown). */
  onBlind(why: string): void;
  /** Events were dropped, all of them from kproxy's own transactions. */
  onOwnLoss?(): void;
  /** Events were dropped: make a tiny transaction of kproxy's own so the next generation line shows what went missing. */
  onProbe?(): void;
  /**
   * The kernel names processes kproxy did not start for kproxy's own
   * transactions (kproxy runs in a PID namespace of its own): the monitor
   * cannot tell changes apart and has stopped.
   */
  onUnattributable?(): void;
}

/**
 * The listener a backend repairing from events gives the monitor: each
 * foreign transaction's findings, a restart or a blind spot as a broad
 * repair (`queue(findings, why)` records them and returns what to report),
 * kproxy's own losses logged, probes made with `probe`.
 */
export function driftListener<F>(o: {
  readonly fromEvents: (generation: NftGeneration) => { findings: Iterable<F>; broad?: string };
  readonly queue: (findings: Iterable<F>, broad?: string) => DriftReport;
  readonly report: (r: DriftReport) => void;
  /** Whether kproxy has written anything yet (then a start after nothing watched may have missed changes). */
  readonly applied: () => boolean;
  readonly probe: () => void;
  readonly log: Logger;
}): NftMonitorListener {
  const report = (r: DriftReport): void => {
    if (r.damage.length || r.full !== undefined) o.report(r);
  };
  return {
    onForeign: (gen) => {
      const r = o.fromEvents(gen);
      report(o.queue(r.findings, r.broad));
    },
    // Changes made while nothing watched are unknown: repair everything once.
    onReady: (restart) => {
      if (restart || o.applied()) report(o.queue([], 'nf_tables changes may have been missed while not watching'));
    },
    onBlind: (why) => report(o.queue([], why)),
    onOwnLoss: () => o.log.info('nf_tables events of kproxy\'s own large transaction were dropped (the event socket was full)'),
    onProbe: () => o.probe(),
  };
}

export interface NftMonitorOptions {
  /** Where nft runs: its `stream` starts the monitor, its `children` are kproxy's own tools. */
  readonly exec: Exec;
  readonly log: Logger;
  /** The tables whose changes matter, e.g. ("ip", "kproxy"). */
  watches(family: string, table: string): boolean;
  readonly listener: NftMonitorListener;
  /** Restart delays after the monitor ended: from initialRetryMs doubling to maxRetryMs. */
  readonly initialRetryMs?: number;
  readonly maxRetryMs?: number;
  /** Blind spots reported less than this long after the last one wait till then (coalesced; default 30 s). */
  readonly minBlindIntervalMs?: number;
  /** Whether the monitor process is subscribed yet (default: read from /proc). */
  readonly subscribed?: (pid: number) => boolean;
  /** Bytes waiting on its socket (default: read from /proc). */
  readonly queuedBytes?: (pid: number) => number | undefined;
  readonly timers?: SupervisorTimers;
  /** The nft binary (default /usr/sbin/nft). */
  readonly nft?: string;
  /** The event source (default: the listener when its addon is built, else nft monitor). */
  readonly source?: NftEventSource;
  /** The listener's socket settings. */
  readonly listenerOptions?: ListenerOptions;
  /**
   * The watched tables hold named sets or maps (nftables mode). nft 1.0.6 (the fallback source)
   * forgets a named set from its cache when a rule that uses it is deleted,
   * and then drops that set's element events, saying only "W: Received
   * event for an unknown set." (re-declaring the set, `add map` of the same
   * map, makes it known again). Such a drop in someone else's transaction,
   * while a set may be forgotten or in a transaction that touched a
   * watched table, is reported as a blind spot.
   */
  readonly namedSets?: boolean;
}

export class NftMonitor {
  private readonly opts: NftMonitorOptions;
  private readonly log: Logger;
  private readonly supervisor: Supervisor;
  /** Watched lines of the transaction being read (until its generation line). */
  private pending: string[] = [];
  private lastGeneration: number | undefined;
  private everReady = false;
  private ownSeen = false;
  /** Foreign-looking transactions by kproxy's own tool's name, held until attribution is known to work. */
  private held: HeldGeneration[] = [];
  private suspicious = 0;
  /** Element events nft could not name in the transaction being read. */
  private unnamed = 0;
  /** Watched lines thrown away at a loss line since the last generation line (they had lost theirs, or were part of the next one's). */
  private clearedByLoss = 0;
  private lastBlindAt = -Infinity;
  private blindTimer: unknown;
  private blindWhy: string | undefined;
  /** A rule of a watched table was deleted since its sets were last declared: nft may have forgotten them. */
  private setsMayBeForgotten = false;
  private stopped = false;
  private disabled = false;
  private subscribedNow = false;
  /** When the running monitor subscribed: tools of kproxy's that ended before made no transaction it can see. */
  private subscribedAt = Infinity;
  /** The running listener said it is subscribed ("ready" line). */
  private saidReady = false;
  private chosen: NftEventSource | undefined;
  private readyResolve!: () => void;
  /** Resolves once the monitor first sees changes, or failed to start, or was stopped. */
  readonly ready: Promise<void>;

  constructor(opts: NftMonitorOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.ready = new Promise((r) => { this.readyResolve = r; });
    const stream = opts.exec.stream;
    this.supervisor = new Supervisor({
      start: () => {
        if (!stream) throw new Error('this Exec cannot run a long-lived tool');
        return this.launch(stream);
      },
      onExit: (exit, ranMs, retryInMs) => {
        this.subscribedNow = false;
        this.pending = [];
        this.clearedByLoss = 0;
        this.unnamed = 0;
        this.setsMayBeForgotten = false;
        this.lastGeneration = undefined;
        this.readyResolve(); // a first start that failed does not hold up the first sync
        this.log.warn({ code: exit.code, signal: exit.signal, error: exit.error, ranMs, retryInMs }, `${this.source} ended; starting it again`);
      },
      initialRetryMs: opts.initialRetryMs ?? 1000,
      maxRetryMs: opts.maxRetryMs ?? 30_000,
      timers: opts.timers,
    });
  }

  /** Whether events are being read and attributed now. */
  get watching(): boolean {
    return this.subscribedNow && !this.disabled;
  }

  /** Where events come from (decided at start). */
  get source(): NftEventSource {
    if (this.chosen === undefined) {
      if (this.opts.source !== undefined) {
        this.chosen = this.opts.source;
      } else {
        const addon = nftEventsAddon();
        this.chosen = addon instanceof Error ? 'nft monitor' : 'listener';
        if (addon instanceof Error) this.log.warn({ reason: addon.message }, 'the nf_tables event listener is not built: watching with nft monitor, which holds the whole ruleset in memory (about 200 MB at 10,000 Services in nftables mode, 430 MB on iptables-nft)');
      }
    }
    return this.chosen;
  }

  /** How many times the watch process was started. */
  get starts(): number {
    return this.supervisor.startCount;
  }

  /** The running watch process's id. */
  get pid(): number | undefined {
    return this.supervisor.current?.pid;
  }

  start(): void {
    if (!this.opts.exec.stream || !this.opts.exec.children) {
      this.readyResolve();
      return;
    }
    void this.source; // says so now when the listener cannot run
    this.supervisor.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.subscribedNow = false;
    if (this.blindTimer !== undefined) {
      const timers = this.opts.timers;
      if (timers) timers.clearTimeout(this.blindTimer);
      else clearTimeout(this.blindTimer as ReturnType<typeof setTimeout>);
      this.blindTimer = undefined;
    }
    this.readyResolve();
    await this.supervisor.stop();
  }

  private launch(stream: NonNullable<Exec['stream']>): StreamChild {
    this.saidReady = false;
    let child: StreamChild;
    if (this.source === 'listener') {
      const cmd = listenerCommand(nftEventsAddonPath(), this.opts.listenerOptions);
      child = stream(cmd.tool, cmd.args, {
        onLine: (l) => this.line(l),
        onStderr: (s) => this.log.warn({ stderr: s.trim().slice(0, 500) }, 'the nf_tables event listener wrote to stderr'),
      });
    } else {
      child = stream(this.opts.nft ?? '/usr/sbin/nft', ['monitor'], {
        onLine: (l) => this.line(l),
        onStderr: (s) => this.log.debug({ stderr: s.trim().slice(0, 500) }, 'nft monitor wrote to stderr'),
      }, { mergeStderr: true });
    }
    void this.awaitSubscription(child);
    return child;
  }

  private async awaitSubscription(child: StreamChild): Promise<void> {
    const pid = child.pid;
    if (pid === undefined) return;
    const subscribed = this.opts.subscribed ?? subscribedToNftables;
    let ended = false;
    let said = false;
    void child.exited.then(() => { ended = true; });
    void child.ready?.then(() => { said = true; });
    const listener = this.source === 'listener';
    while (!ended && !this.stopped) {
      // The listener says when it has joined the event group; nft monitor is watched from /proc.
      if (said || (listener ? this.saidReady : !child.ready && subscribed(pid))) {
        this.subscribedNow = true;
        this.subscribedAt = Date.now();
        const restart = this.everReady;
        this.everReady = true;
        this.log.info({ pid, restart, source: this.source }, 'watching nf_tables changes');
        this.readyResolve();
        this.opts.listener.onReady(restart);
        return;
      }
      await new Promise((r) => setTimeout(r, child.ready || listener ? 5 : 50));
    }
  }

  private line(line: string): void {
    if (this.disabled || line === '') return;
    if (line.charCodeAt(0) === 35 /* # */) {
      const t = parseTrailer(line);
      if (t) this.generation(t.id, t.pid, t.comm);
      else if (line === lostLine || lossLine.test(line)) this.lost();
      return;
    }
    if (line.charCodeAt(0) === 114 /* r */ && parseReady(line) !== undefined) {
      this.saidReady = true;
      return;
    }
    if (unknownSetLine.test(line)) {
      this.unnamed++;
      return;
    }
    const where = tableOf(line);
    if (where && this.opts.watches(where[0], where[1])) this.pending.push(line);
  }

  /**
   * The kernel dropped events (nft says so at its next read, wherever that
   * falls among the events still queued). The lines read since the last
   * generation line belong to transactions whose generation lines may be
   * dropped, or to the next one: the next generation line decides.
   */
  private lost(): void {
    this.log.debug({ dropped: this.pending.length }, 'the kernel dropped nf_tables events');
    this.clearedByLoss += this.pending.length;
    this.pending = [];
    void this.probeWhenDrained();
  }

  private draining = false;

  /**
   * The kernel drops every event until nft has read its queue empty: only
   * a probe made after that is seen, and its generation line shows how
   * many transactions went missing meanwhile.
   */
  private async probeWhenDrained(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      // A probe made while the socket is still congested is dropped too, and
      // no new loss line says so: try again until a generation line comes.
      for (let attempt = 0; attempt < 5 && !this.stopped; attempt++) {
        const child = this.supervisor.current;
        const pid = child?.pid;
        if (pid === undefined) return;
        if (!child?.ready) {
          const read = this.opts.queuedBytes ?? queuedBytes;
          for (let i = 0; i < 6000 && !this.stopped && this.supervisor.current === child; i++) {
            if ((read(pid) ?? 0) === 0) break;
            await new Promise((r) => setTimeout(r, 20));
          }
        }
        if (this.stopped) return;
        const before = this.lastGeneration;
        this.opts.listener.onProbe?.();
        for (let i = 0; i < 100 && this.lastGeneration === before && !this.stopped; i++) await new Promise((r) => setTimeout(r, 20));
        if (this.lastGeneration !== before) return;
      }
    } finally {
      this.draining = false;
    }
  }

  /** How many transactions kproxy's own tools may have made that no generation line showed yet. */
  private ownUnseen(): { budget: number; records: ChildRecord[] } {
    const records = this.opts.exec.children!.all().filter((r) => r.endedAt === undefined || r.endedAt >= this.subscribedAt);
    let budget = 0;
    for (const r of records) budget += Math.max(0, commitsOf(r) - r.seen);
    return { budget, records };
  }

  /** Counts `n` unseen transactions of kproxy's own tools as seen, oldest tools first. */
  private consume(records: ChildRecord[], n: number): void {
    for (const r of records) {
      while (n > 0 && r.seen < commitsOf(r)) {
        r.seen++;
        n--;
      }
    }
  }

  private blind(why: string): void {
    const now = Date.now();
    const wait = this.lastBlindAt + (this.opts.minBlindIntervalMs ?? 30_000) - now;
    if (wait <= 0) {
      this.lastBlindAt = now;
      this.opts.listener.onBlind(why);
      return;
    }
    // Coalesced: a node whose nf_tables is very busy must not make kproxy rewrite everything back to back.
    this.blindWhy ??= why;
    if (this.blindTimer !== undefined) return;
    const fire = (): void => {
      this.blindTimer = undefined;
      const w = this.blindWhy!;
      this.blindWhy = undefined;
      if (this.stopped) return;
      this.lastBlindAt = Date.now();
      this.opts.listener.onBlind(w);
    };
    const timers = this.opts.timers;
    this.blindTimer = timers ? timers.setTimeout(fire, wait) : setTimeout(fire, wait).unref();
  }

  private generation(id: number, pid: number, comm: string): void {
    const lines = this.pending;
    this.pending = [];
    const unnamed = this.unnamed;
    this.unnamed = 0;
    const forgottenBefore = this.setsMayBeForgotten;
    if (this.opts.namedSets && this.source === 'nft monitor') {
      for (const l of lines) {
        if (l.startsWith('delete rule ')) this.setsMayBeForgotten = true;
        else if (l.startsWith('add map ') || l.startsWith('add set ')) this.setsMayBeForgotten = false;
      }
    }
    const prev = this.lastGeneration;
    this.lastGeneration = id;
    const cleared = this.clearedByLoss;
    this.clearedByLoss = 0;
    const children = this.opts.exec.children!;
    // By process id; or by the name kproxy runs its tools under (process
    // ids differ when kproxy has a PID namespace of its own).
    const mine = children.get(pid) ?? (comm.startsWith(ownToolPrefix) ? children.all().find((r) => r.comm === comm && r.seen < commitsOf(r)) : undefined);
    const own = mine !== undefined || comm.startsWith(ownToolPrefix);
    if (mine) mine.seen++;
    const missing = prev === undefined ? 0 : id - prev - 1;
    if (missing > 0) {
      // Every commit ends with a generation line: `missing` were dropped.
      const { budget, records } = this.ownUnseen();
      if (missing > budget) {
        this.blind(`nf_tables generations ${prev! + 1}..${id - 1} were not seen, not all of them kproxy's own`);
        return;
      }
      this.consume(records, missing);
      this.log.debug({ missing, budget }, 'nf_tables generations of kproxy\'s own were not seen');
      this.opts.listener.onOwnLoss?.();
      // The lines read since the last generation line are theirs and this one's, not told apart.
      if (!own && lines.length + cleared > 0) {
        this.blind(`changes by ${comm} (pid ${pid}) came mixed with dropped ones of kproxy's own`);
        return;
      }
    } else if (!own && cleared > 0) {
      this.blind(`changes by ${comm} (pid ${pid}) were partly dropped`);
      return;
    }
    if (own) {
      this.ownSeen = true;
      this.release();
      return;
    }
    const events: NftEvent[] = [];
    const fromListener = this.source === 'listener';
    for (const l of lines) {
      const e = fromListener ? listenerEvent(l) : parseEvent(l);
      if (e) events.push(e);
    }
    // Element changes nft could not name, where they may have been in kproxy's table.
    const unknown = unnamed > 0 && this.opts.namedSets === true && (lines.length > 0 || forgottenBefore) ? unnamed : 0;
    if (events.length === 0 && unknown === 0) return;
    const gen: HeldGeneration = { id, pid, comm, events, unknown };
    if (!this.ownSeen && children.recent(2000).some((c) => c.comm === comm)) {
      // A transaction by "our" tool that is not ours, before any of ours was
      // recognised: either someone else's nft ran at the same moment, or
      // process ids differ between kproxy and the kernel (a PID namespace of
      // its own, and no tool could run under kproxy's name). A second one
      // settles it; meanwhile it is held back.
      if (++this.suspicious >= 2) {
        this.disabled = true;
        this.held = [];
        this.log.warn({ pid, comm }, 'nf_tables names processes kproxy did not start for its own changes (is kproxy in a PID namespace of its own? run it with the host\'s, e.g. hostPID); no longer watching nf_tables events, the periodic check goes on');
        this.opts.listener.onUnattributable?.();
        void this.supervisor.stop();
        return;
      }
      this.held.push(gen);
      const timers = this.opts.timers;
      const later = (): void => this.release();
      if (timers) timers.setTimeout(later, 10_000);
      else setTimeout(later, 10_000).unref();
      return;
    }
    this.foreign(gen);
  }

  private foreign(g: HeldGeneration): void {
    if (g.unknown > 0) this.blind(`nft monitor could not name the set of ${g.unknown} element change${g.unknown > 1 ? 's' : ''} by ${g.comm} (pid ${g.pid})`);
    if (g.events.length) this.opts.listener.onForeign({ id: g.id, pid: g.pid, comm: g.comm, events: g.events });
  }

  /** Hands on the transactions held back while attribution was in doubt. */
  private release(): void {
    if (this.disabled || this.held.length === 0) return;
    const held = this.held;
    this.held = [];
    for (const g of held) this.foreign(g);
  }
}
