// Runs inside a user-mode-linux guest (started by the init script that
// test/helpers/uml.ts writes) and executes commands for the host test
// process. It speaks JSON lines over a UML serial line (argv[2], raw mode)
// that the host sees as a socket:
//
//   host → guest  a request { id, op, ... }, or { spool: FILE } naming a
//                 file on hostfs that holds the request (large inputs)
//   guest → host  { ack: id } as soon as a line is read (the host keeps at
//                 most a few KB unacknowledged: the guest's tty drops input
//                 beyond its 4 KB buffer), then { id, ok, ... } when done,
//                 and { event: 'out' | 'exit', pid, ... } for spawned processes
//
// When the line closes (the host died) or a halt request comes, every
// process it started is killed and the runner exits; the init script then
// halts the guest.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ReadStream, WriteStream } from 'node:tty';

interface RunRequest {
  readonly id: number;
  readonly op: 'run';
  readonly argv: readonly string[];
  readonly input?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
}
interface SpawnRequest {
  readonly id: number;
  readonly op: 'spawn';
  readonly argv: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}
interface WriteRequest {
  readonly id: number;
  readonly op: 'write';
  readonly pid: number;
  readonly data?: string;
  readonly end?: boolean;
}
interface KillRequest {
  readonly id: number;
  readonly op: 'kill';
  readonly pid: number;
  readonly signal: NodeJS.Signals;
}
interface HaltRequest {
  readonly id: number;
  readonly op: 'halt';
}
type Request = RunRequest | SpawnRequest | WriteRequest | KillRequest | HaltRequest;

const fd = openSync(process.argv[2], 'r+');
const input = new ReadStream(fd);
input.setRawMode(true);
const output = new WriteStream(fd);
const send = (message: object): void => { output.write(JSON.stringify(message) + '\n'); };

const baseEnv: Record<string, string> = {
  PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.execPath.replace(/\/[^/]*$/, '')}`,
  HOME: '/root',
  LANG: 'C.UTF-8',
};

// Spawned processes by pid; each leads its own process group so a kill
// reaches what it started (`ip netns exec` → node, sh → children).
const children = new Map<number, ChildProcess>();

function killAll(): void {
  for (const pid of children.keys()) {
    try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

function run(req: RunRequest): void {
  const started = process.hrtime.bigint();
  const child = spawn(req.argv[0], req.argv.slice(1), { env: { ...baseEnv, ...req.env }, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let timedOut = false;
  const timer = req.timeoutMs ? setTimeout(() => {
    timedOut = true;
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
  }, req.timeoutMs) : undefined;
  if (child.pid) children.set(child.pid, child);
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  child.stdin!.on('error', () => { /* the exit status tells */ });
  child.stdin!.end(req.input ?? '');
  child.on('error', (e) => {
    clearTimeout(timer);
    send({ id: req.id, ok: false, error: `cannot start ${req.argv[0]}: ${e.message}` });
  });
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    if (child.pid) children.delete(child.pid);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    send({ id: req.id, ok: true, code, signal, timedOut, ms, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
  });
}

function start(req: SpawnRequest): void {
  const child = spawn(req.argv[0], req.argv.slice(1), { env: { ...baseEnv, ...req.env }, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  child.on('error', (e) => send({ id: req.id, ok: false, error: `cannot start ${req.argv[0]}: ${e.message}` }));
  child.on('spawn', () => {
    const pid = child.pid!;
    children.set(pid, child);
    send({ id: req.id, ok: true, pid });
    child.stdout!.setEncoding('utf8').on('data', (data: string) => send({ event: 'out', pid, stream: 'stdout', data }));
    child.stderr!.setEncoding('utf8').on('data', (data: string) => send({ event: 'out', pid, stream: 'stderr', data }));
    child.stdin!.on('error', () => { /* reported through exit */ });
    child.on('close', (code, signal) => {
      children.delete(pid);
      send({ event: 'exit', pid, code, signal });
    });
  });
}

function handle(req: Request): void {
  switch (req.op) {
    case 'run':
      return run(req);
    case 'spawn':
      return start(req);
    case 'write': {
      const child = children.get(req.pid);
      if (!child) return send({ id: req.id, ok: false, error: `no process ${req.pid}` });
      if (req.data) child.stdin!.write(req.data);
      if (req.end) child.stdin!.end();
      return send({ id: req.id, ok: true });
    }
    case 'kill': {
      try {
        process.kill(-req.pid, req.signal);
      } catch (e) {
        return send({ id: req.id, ok: false, error: `kill ${req.pid}: ${(e as Error).message}` });
      }
      return send({ id: req.id, ok: true });
    }
    case 'halt':
      killAll();
      send({ id: req.id, ok: true });
      output.end(() => process.exit(0));
      return;
    default:
      return send({ id: (req as { id?: number }).id ?? 0, ok: false, error: `unknown op ${JSON.stringify((req as { op?: unknown }).op)}` });
  }
}

createInterface({ input, crlfDelay: Infinity }).on('line', (line) => {
  let req: Request;
  try {
    const message = JSON.parse(line) as Request | { spool: string };
    if ('spool' in message) {
      req = JSON.parse(readFileSync(message.spool, 'utf8')) as Request;
      rmSync(message.spool, { force: true });
    } else {
      req = message;
    }
  } catch (e) {
    send({ event: 'error', error: `bad request line: ${(e as Error).message}` });
    return;
  }
  send({ ack: req.id });
  handle(req);
});
input.on('end', () => {
  killAll();
  process.exit(0);
});

send({ event: 'ready', uptime: Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) });
