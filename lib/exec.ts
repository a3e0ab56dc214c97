// Runs a kernel tool with one batch on stdin. Typed errors carry the tool's
// stderr and exit code so a failed sync can be logged and retried. An Exec
// also remembers the processes it started (so an event stream that names
// the process behind each kernel change can tell kproxy's own changes from
// anybody else's) and can run a long-lived tool whose output is read line by
// line (`stream`).
import { spawn } from 'node:child_process';
import { accessSync, constants, lstatSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { KproxyError } from './errors.ts';

export class ToolError extends KproxyError {
  readonly tool: string;
  readonly args: readonly string[];
  /** The tool's exit status (null when it could not be started). */
  readonly status: number | null;
  readonly stderr: string;
  constructor(tool: string, args: readonly string[], exitCode: number | null, stderr: string) {
    super('KPROXY_TOOL_FAILED', `${tool} ${args.join(' ')} failed (exit ${exitCode}): ${stderr.trim().slice(0, 2000)}`);
    this.name = 'ToolError';
    this.tool = tool;
    this.args = args;
    this.status = exitCode;
    this.stderr = stderr;
  }
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** How a long-lived tool ended. */
export interface StreamExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when it could not be started at all (e.g. not installed). */
  readonly error?: string;
}

export interface StreamHandlers {
  /** Each line of stdout, without its newline, in order. */
  onLine(line: string): void;
  onStderr?(text: string): void;
}

/** A long-lived tool started by StreamExec. */
export interface StreamChild {
  /** Its process id (undefined when it could not be started). */
  readonly pid: number | undefined;
  readonly exited: Promise<StreamExit>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has ended. */
  stop(graceMs?: number): Promise<StreamExit>;
  /** Set by a tool (or a test's stand-in) that says itself when it is ready; others are watched from outside. */
  readonly ready?: Promise<void>;
}

export interface StreamOptions {
  /**
   * Its stderr goes into the same pipe as stdout, so warnings arrive as
   * lines in their place among the output (onStderr then gets nothing).
   */
  readonly mergeStderr?: boolean;
}

/** Starts `tool args` and hands its stdout to `handlers` line by line. */
export type StreamExec = (tool: string, args: readonly string[], handlers: StreamHandlers, opts?: StreamOptions) => StreamChild;

/** What a caller knows of a run that the Exec cannot see. */
export interface ExecHint {
  /** How many transactions the tool commits (so an event stream can account for kproxy's own). */
  readonly commits?: number;
}

/** Runs `tool args` with `input` on stdin; rejects with ToolError on a non-zero exit. */
export interface Exec {
  (tool: string, args: readonly string[], input?: string, hint?: ExecHint): Promise<ExecResult>;
  /** Long-lived tools (an event monitor); absent where no process runs (fake kernels). */
  readonly stream?: StreamExec;
  /** The processes this Exec started, for telling kproxy's own kernel changes from others'. */
  readonly children?: ChildLog;
}

/** A process an Exec started: its id, the name the kernel gives it, and when it ended. */
export interface ChildRecord {
  readonly pid: number;
  /** The kernel's name for it (comm: the executable's base name, at most 15 bytes). */
  readonly comm: string;
  /** Its first arguments (enough to tell `nft -f` from `nft list`, or a listing from a change). */
  readonly args: readonly string[];
  /** How many transactions it commits, when the caller said (ExecHint). */
  readonly commits?: number;
  readonly startedAt: number;
  endedAt?: number;
  /** How many of its changes an event stream has reported (for those that count them). */
  seen: number;
}

/**
 * The tools an Exec started, alive or ended less than `keepMs` ago. Event
 * streams can report a change seconds after the tool made it (a large
 * transaction takes a while to read back), so ended tools are kept a
 * while; not longer, because process ids are reused.
 */
export class ChildLog {
  readonly keepMs: number;
  private readonly now: () => number;
  private readonly byPid = new Map<number, ChildRecord>();

  constructor(keepMs = 15_000, now: () => number = Date.now) {
    this.keepMs = keepMs;
    this.now = now;
  }

  started(pid: number, tool: string, args: readonly string[] = [], hint?: ExecHint): void {
    this.prune();
    this.byPid.set(pid, { pid, comm: commOf(tool), args: args.slice(0, 16), startedAt: this.now(), seen: 0, ...(hint?.commits !== undefined ? { commits: hint.commits } : {}) });
  }

  /** The record of `pid`, if it is one of these tools. */
  get(pid: number): ChildRecord | undefined {
    this.prune();
    return this.byPid.get(pid);
  }

  /** Every tool kept: alive, or ended less than keepMs ago, oldest first. */
  all(): ChildRecord[] {
    this.prune();
    return [...this.byPid.values()].sort((a, b) => a.startedAt - b.startedAt);
  }

  ended(pid: number): void {
    const r = this.byPid.get(pid);
    if (r) r.endedAt = this.now();
  }

  /** Whether `pid` is (or recently was) a tool this Exec started. */
  has(pid: number): boolean {
    this.prune();
    return this.byPid.has(pid);
  }

  /** Tools alive now or ended less than `withinMs` ago. */
  recent(withinMs: number): ChildRecord[] {
    this.prune();
    const since = this.now() - withinMs;
    return [...this.byPid.values()].filter((r) => r.endedAt === undefined || r.endedAt >= since);
  }

  private prune(): void {
    const before = this.now() - this.keepMs;
    for (const [pid, r] of this.byPid) if (r.endedAt !== undefined && r.endedAt < before) this.byPid.delete(pid);
  }
}

/** The kernel's task name for an executable: its base name, cut to 15 bytes. */
export function commOf(tool: string): string {
  return tool.replace(/^.*\//, '').slice(0, 15);
}

// Kernel tools are called by absolute path: inside npm scripts
// node_modules/.bin holds an unrelated `nft` that would shadow nftables'.
const systemDirs = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];

export function toolPath(tool: string): string {
  if (tool.startsWith('/')) return tool;
  for (const dir of systemDirs) {
    const p = `${dir}/${tool}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // try the next directory
    }
  }
  return `/usr/sbin/${tool}`;
}

/** Names the kernel gives kproxy's own kernel tools on this host (see tagged()). */
export const ownToolPrefix = 'kproxy-';

// The tools that commit nf_tables transactions, and the name each runs
// under: a symlink in a directory of kproxy's own. The kernel names a
// transaction's process by its executable's name, so these are told apart
// from an operator's nft or iptables even where kproxy cannot see the
// kernel's process ids (a container with a PID namespace of its own).
// argv[0] keeps the real name: iptables' multi-call binary dispatches on it.
const tags: Readonly<Record<string, string>> = {
  nft: 'kproxy-nft',
  'iptables-nft-restore': 'kproxy-iptr',
  'ip6tables-nft-restore': 'kproxy-ip6tr',
  'iptables-nft': 'kproxy-ipt',
  'ip6tables-nft': 'kproxy-ip6t',
};
let tagDir: string | null | undefined;
const links = new Map<string, string | null>();

/**
 * kproxy's own directory for the links: one per user, reused by every
 * kproxy process (nothing is left behind per run). It must be a real
 * directory owned by this user and closed to everyone else, or a local
 * user could plant a link kproxy would run as root; otherwise none is used.
 */
function ownDir(): string | null {
  const dir = join(tmpdir(), `kproxy-tools-${process.getuid?.() ?? 'x'}`);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return null;
  }
  const st = lstatSync(dir);
  const mine = st.isDirectory() && (process.getuid === undefined || st.uid === process.getuid()) && (st.mode & 0o077) === 0;
  return mine ? dir : null;
}

/** The path to run `path` by under kproxy's name, or undefined when it has none (or no link could be made). */
function tagged(path: string): string | undefined {
  const tag = tags[basename(path)];
  if (!tag) return undefined;
  let link = links.get(path);
  if (link === undefined) {
    link = null;
    try {
      tagDir ??= ownDir();
      if (tagDir) {
        const want = join(tagDir, tag);
        let current: string | undefined;
        try {
          current = readlinkSync(want);
        } catch {
          // not there yet
        }
        if (current !== path) {
          // Another kproxy may do the same at once: link beside, then rename over.
          const tmp = `${want}.${process.pid}`;
          rmSync(tmp, { force: true });
          symlinkSync(path, tmp);
          renameSync(tmp, want);
        }
        link = want;
      }
    } catch {
      // no usable directory: the tool runs under its own name
    }
    links.set(path, link);
  }
  return link ?? undefined;
}

function run(argv0: string, argv: readonly string[], tool: string, args: readonly string[], input: string | undefined, children: ChildLog, hint?: ExecHint): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const link = argv0 === toolPath(tool) ? tagged(argv0) : undefined;
    const child = link ? spawn(link, argv, { stdio: ['pipe', 'pipe', 'pipe'], argv0: basename(argv0) }) : spawn(argv0, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    // `ip netns exec` execs the tool in place: the process id is the tool's.
    const pid = child.pid;
    if (pid !== undefined) children.started(pid, link ?? toolPath(tool), args, hint);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new ToolError(tool, args, null, String(e))));
    child.on('close', (code) => {
      if (pid !== undefined) children.ended(pid);
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) resolve({ stdout, stderr });
      else reject(new ToolError(tool, args, code, stderr || stdout));
    });
    child.stdin.on('error', () => { /* reported through close */ });
    child.stdin.end(input ?? '');
  });
}

function runStream(argv0: string, argv: readonly string[], handlers: StreamHandlers): StreamChild {
  const child = spawn(argv0, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let done: StreamExit | undefined;
  const exited = new Promise<StreamExit>((resolve) => {
    child.on('error', (e) => {
      done ??= { code: null, signal: null, error: String(e) };
      resolve(done);
    });
    child.on('close', (code, signal) => {
      done ??= { code, signal };
      resolve(done);
    });
  });
  const decoder = new StringDecoder('utf8');
  let partial = '';
  child.stdout.on('data', (b: Buffer) => {
    const text = partial + decoder.write(b);
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) handlers.onLine(l);
  });
  child.stdout.on('end', () => {
    const rest = partial + decoder.end();
    partial = '';
    if (rest) handlers.onLine(rest);
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => handlers.onStderr?.(s));
  return {
    pid: child.pid,
    exited,
    async stop(graceMs = 2000) {
      if (done) return done;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const e = await exited;
      clearTimeout(timer);
      return e;
    },
  };
}

function makeExec(prefix: readonly string[]): Exec {
  const children = new ChildLog();
  const wrap = (tool: string, args: readonly string[]): [string, string[]] =>
    prefix.length ? [prefix[0], [...prefix.slice(1), toolPath(tool), ...args]] : [toolPath(tool), [...args]];
  const exec = (tool: string, args: readonly string[], input?: string, hint?: ExecHint): Promise<ExecResult> => {
    const [argv0, argv] = wrap(tool, args);
    return run(argv0, argv, tool, args, input, children, hint);
  };
  const stream: StreamExec = (tool, args, handlers, opts) => {
    // `sh -c 'exec ...'` replaces the shell: the process id stays the tool's.
    const [argv0, argv] = opts?.mergeStderr ? wrap('sh', ['-c', 'exec "$0" "$@" 2>&1', toolPath(tool), ...args]) : wrap(tool, args);
    return runStream(argv0, argv, handlers);
  };
  return Object.assign(exec, { stream, children });
}

/** Runs tools on this host's own network namespace. */
export const hostExec: Exec = makeExec([]);

/** Runs tools inside network namespace `ns` (tests, demo). */
export function netnsExec(ns: string): Exec {
  return makeExec([toolPath('ip'), 'netns', 'exec', ns]);
}
