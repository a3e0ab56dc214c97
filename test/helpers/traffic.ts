// Real traffic inside a sandbox: backend servers that answer every TCP
// connection and UDP datagram with their pod's name, and clients that count
// answers per backend. Each runs as one small Node.js process inside its
// namespace (`ip netns exec`), so one process makes many connections.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { toolPath } from '../../lib/exec.ts';
import type { Pod } from './netns.ts';

export type Protocol = 'tcp' | 'udp';

/** What one client run saw. */
export interface ClientResult {
  readonly attempts: number;
  readonly answered: number;
  /** Answers per backend identity ("pod-1": 97, ...). */
  readonly byBackend: Readonly<Record<string, number>>;
  /** Connection refused (RST or ICMP unreachable): the kernel said no at once. */
  readonly refused: number;
  /** No answer within the timeout. */
  readonly timedOut: number;
  /** Any other outcome, by error code. */
  readonly errors: Readonly<Record<string, number>>;
  /** Every failed attempt, with its time since the client started. */
  readonly failures: readonly { readonly atMs: number; readonly kind: string }[];
  /** Longest single attempt, in milliseconds. */
  readonly maxAttemptMs: number;
  readonly durationMs: number;
}

// Answers with its identity; prints "ready" once every port listens.
const serverScript = String.raw`
const net = require('node:net'), dgram = require('node:dgram');
const a = JSON.parse(process.env.KP_ARGS);
let pending = a.tcp.length + a.udp.length;
const ready = () => { if (--pending === 0) process.stdout.write('ready\n'); };
for (const port of a.tcp) {
  net.createServer((s) => { s.on('error', () => {}); s.end(a.id + '\n'); }).listen(port, '0.0.0.0', ready);
}
for (const port of a.udp) {
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(a.id + '\n', r.port, r.address));
  u.bind(port, '0.0.0.0', ready);
}
if (pending === 0) process.stdout.write('ready\n');
`;

// Makes attempts (a fixed count, or continuously until stdin closes) and
// prints one JSON result.
export const clientScript = String.raw`
const net = require('node:net'), dgram = require('node:dgram');
const a = JSON.parse(process.env.KP_ARGS);
const t0 = Date.now();
const r = { attempts: 0, answered: 0, byBackend: {}, refused: 0, timedOut: 0, errors: {}, failures: [], maxAttemptMs: 0, durationMs: 0 };
function once() {
  return new Promise((done) => {
    const started = Date.now();
    let finished = false, buf = '', sock;
    const fin = (kind) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      try { a.protocol === 'udp' ? sock.close() : sock.destroy(); } catch {}
      r.attempts++;
      r.maxAttemptMs = Math.max(r.maxAttemptMs, Date.now() - started);
      const answer = buf.trim();
      if (kind === 'ok' && answer) { r.answered++; r.byBackend[answer] = (r.byBackend[answer] || 0) + 1; }
      else {
        if (kind === 'ok') kind = 'EMPTY';
        if (kind === 'ECONNREFUSED') r.refused++;
        else if (kind === 'TIMEOUT') r.timedOut++;
        else r.errors[kind] = (r.errors[kind] || 0) + 1;
        r.failures.push({ atMs: started - t0, kind });
      }
      done();
    };
    const timer = setTimeout(() => fin('TIMEOUT'), a.timeoutMs);
    if (a.protocol === 'udp') {
      sock = dgram.createSocket('udp4');
      sock.on('error', (e) => fin(e.code || 'ERROR'));
      sock.on('message', (m) => { buf = m.toString(); fin('ok'); });
      sock.connect(a.port, a.host, () => sock.send('hello'));
    } else {
      sock = net.connect({ host: a.host, port: a.port });
      sock.setEncoding('utf8');
      sock.on('data', (d) => { buf += d; });
      sock.on('end', () => fin('ok'));
      sock.on('error', (e) => fin(e.code || 'ERROR'));
    }
  });
}
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
async function main() {
  if (a.continuous) {
    let stop = false;
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => { stop = true; });
    process.stdout.write('started\n');
    while (!stop) { await once(); await sleep(a.intervalMs); }
  } else {
    let next = 0;
    const worker = async () => { while (next < a.count) { next++; await once(); } };
    await Promise.all(Array.from({ length: Math.min(a.concurrency, a.count) }, worker));
  }
  r.durationMs = Date.now() - t0;
  process.stdout.write(JSON.stringify(r) + '\n');
}
main();
`;

// One UDP socket kept open (one conntrack flow): each stdin line sends one
// datagram and prints what came back.
export const udpSessionScript = String.raw`
const dgram = require('node:dgram'), readline = require('node:readline');
const a = JSON.parse(process.env.KP_ARGS);
const sock = dgram.createSocket('udp4');
let waiting = null;
const answer = (s) => { if (waiting) { const w = waiting; waiting = null; clearTimeout(w.timer); process.stdout.write(JSON.stringify(s) + '\n'); } };
sock.on('message', (m) => answer({ kind: 'ok', answer: m.toString().trim() }));
sock.on('error', (e) => answer({ kind: e.code || 'ERROR', answer: '' }));
sock.bind(0, () => sock.connect(a.port, a.host, () => {
  process.stdout.write(JSON.stringify({ kind: 'connected', answer: String(sock.address().port) }) + '\n');
  readline.createInterface({ input: process.stdin }).on('line', () => {
    waiting = { timer: setTimeout(() => answer({ kind: 'TIMEOUT', answer: '' }), a.timeoutMs) };
    sock.send('hello');
  });
}));
`;

// One HTTP GET (retried until `wantStatus` or the deadline), printed as JSON.
export const httpScript = String.raw`
const a = JSON.parse(process.env.KP_ARGS);
const deadline = Date.now() + a.deadlineMs;
(async () => {
  let last = { status: 0, body: '', error: 'not tried' };
  for (;;) {
    try {
      const res = await fetch(a.url, { signal: AbortSignal.timeout(a.timeoutMs) });
      last = { status: res.status, body: await res.text() };
    } catch (e) {
      last = { status: 0, body: '', error: String((e && e.cause && e.cause.code) || e) };
    }
    if (a.wantStatus === undefined || last.status === a.wantStatus || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stdout.write(JSON.stringify(last) + '\n');
})();
`;

/** Starts `node -e script` inside namespace `ns`, its arguments in the environment. */
export function nodeIn(ns: string, script: string, args: unknown): ChildProcess {
  return spawn(toolPath('ip'), ['netns', 'exec', ns, process.execPath, '-e', script], {
    env: { ...process.env, KP_ARGS: JSON.stringify(args) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** A child's stdout as lines: next() waits for one; all() waits for a clean exit. */
function lines(child: ChildProcess, what: string): { next(): Promise<string>; all(): Promise<string> } {
  let err = '';
  const queue: string[] = [];
  const waiters: { resolve: (s: string) => void; reject: (e: Error) => void }[] = [];
  let closed: Error | undefined;
  createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
    const w = waiters.shift();
    if (w) w.resolve(line); else queue.push(line);
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const done = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      closed = new Error(`${what} exited (${code ?? signal}) ${err.trim()}`);
      for (const w of waiters.splice(0)) w.reject(closed);
      if (code === 0) resolve(queue.join('\n')); else reject(closed);
    });
  });
  done.catch(() => { /* surfaced through next()/all() */ });
  return {
    next() {
      const line = queue.shift();
      if (line !== undefined) return Promise.resolve(line);
      if (closed) return Promise.reject(closed);
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
    all: () => done,
  };
}

export interface Backends {
  readonly pods: readonly Pod[];
  stop(): Promise<void>;
}

/** Starts one server per pod answering with the pod's name on every given port. */
export async function startBackends(pods: readonly Pod[], ports: { tcp?: readonly number[]; udp?: readonly number[] }): Promise<Backends> {
  const children = pods.map((p) => nodeIn(p.ns, serverScript, { id: p.name, tcp: ports.tcp ?? [], udp: ports.udp ?? [] }));
  const stop = async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  try {
    await Promise.all(children.map(async (c, k) => {
      const line = await withTimeout(lines(c, `backend ${pods[k].name}`).next(), 30_000, `backend ${pods[k].name} start`);
      if (line !== 'ready') throw new Error(`backend ${pods[k].name} said ${line}`);
    }));
  } catch (e) {
    await stop();
    throw e;
  }
  return { pods, stop };
}

export interface ConnectOptions {
  readonly protocol?: Protocol;
  /** Attempts in total (default 100). */
  readonly count?: number;
  /** Attempts in flight at once (default 10). */
  readonly concurrency?: number;
  /** Per attempt: connect and answer (default 1000 ms). */
  readonly timeoutMs?: number;
}

/** Makes `count` connections (or datagrams, each from a new socket) from `ns` to host:port. */
export async function connectMany(ns: string, host: string, port: number, opts: ConnectOptions = {}): Promise<ClientResult> {
  const args = {
    host, port, protocol: opts.protocol ?? 'tcp', count: opts.count ?? 100,
    concurrency: opts.concurrency ?? 10, timeoutMs: opts.timeoutMs ?? 1000, continuous: false, intervalMs: 0,
  };
  const child = nodeIn(ns, clientScript, args);
  child.stdin!.end();
  const out = await lines(child, 'client').all();
  return JSON.parse(out) as ClientResult;
}

export interface ContinuousClient {
  /** Stops after the attempt in flight and returns everything it saw. */
  stop(): Promise<ClientResult>;
}

/** Connects again and again (one at a time, `intervalMs` apart) until stopped. */
export async function startContinuousClient(ns: string, host: string, port: number,
  opts: { protocol?: Protocol; intervalMs?: number; timeoutMs?: number } = {}): Promise<ContinuousClient> {
  const child = nodeIn(ns, clientScript, {
    host, port, protocol: opts.protocol ?? 'tcp', count: 0, concurrency: 1,
    timeoutMs: opts.timeoutMs ?? 1000, continuous: true, intervalMs: opts.intervalMs ?? 20,
  });
  const out = lines(child, 'continuous client');
  const first = await withTimeout(out.next(), 30_000, 'continuous client start');
  if (first !== 'started') throw new Error(`continuous client said ${first}`);
  return {
    async stop() {
      child.stdin!.end();
      return JSON.parse(await withTimeout(out.next(), 10_000, 'continuous client stop')) as ClientResult;
    },
  };
}

export interface UdpAnswer {
  /** "ok", "TIMEOUT", or an error code such as "ECONNREFUSED". */
  readonly kind: string;
  readonly answer: string;
}

export interface UdpSession {
  /** The client's source port: the same for every ask (one conntrack flow). */
  readonly sourcePort: number;
  ask(): Promise<UdpAnswer>;
  close(): void;
}

/** One UDP socket from `ns` to host:port that stays open between datagrams. */
export async function openUdpSession(ns: string, host: string, port: number, timeoutMs = 1000): Promise<UdpSession> {
  const child = nodeIn(ns, udpSessionScript, { host, port, timeoutMs });
  const out = lines(child, 'udp session');
  const hello = JSON.parse(await withTimeout(out.next(), 30_000, 'udp session start')) as UdpAnswer;
  return {
    sourcePort: Number(hello.answer),
    async ask() {
      child.stdin!.write('ask\n');
      return JSON.parse(await withTimeout(out.next(), timeoutMs + 10_000, 'udp answer')) as UdpAnswer;
    },
    close() {
      child.kill('SIGKILL');
    },
  };
}

export interface HttpResult {
  readonly status: number;
  readonly body: string;
  readonly error?: string;
}

/**
 * GET `url` from inside `ns`. With `wantStatus`, retries until that status
 * comes back or `deadlineMs` passes, and returns the last answer.
 */
export async function httpGet(ns: string, url: string, opts: { wantStatus?: number; deadlineMs?: number; timeoutMs?: number } = {}): Promise<HttpResult> {
  const child = nodeIn(ns, httpScript, { url, wantStatus: opts.wantStatus, deadlineMs: opts.deadlineMs ?? 0, timeoutMs: opts.timeoutMs ?? 2000 });
  child.stdin!.end();
  return JSON.parse(await lines(child, `GET ${url}`).all()) as HttpResult;
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms); }),
  ]);
}

/** Share of answers per backend, e.g. { "pod-1": 0.33, ... } (0 for backends that never answered). */
export function shares(r: ClientResult, backends: readonly string[]): Record<string, number> {
  return Object.fromEntries(backends.map((b) => [b, r.answered ? (r.byBackend[b] ?? 0) / r.answered : 0]));
}
