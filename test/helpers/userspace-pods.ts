// Backend pods and clients for the userspace mode's kernel tests: each pod
// serves four kinds of TCP endpoint and a UDP one, and small client scripts
// exercise what only a forwarder has to get right (half-close, slow
// readers, long-lived connections). Used by the forwarder-level tests and
// by the tests of the real kproxy process in userspace mode.
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Pod } from './netns.ts';
import { nodeIn, withTimeout } from './traffic.ts';

// Per pod: 8080 answers the pod's name and closes (TCP and UDP); 8081 greets
// with the name, then echoes lines; 8082 reads to the client's end, then
// answers "got N" and a 1 MiB body; 8083 sends as fast as the reader takes.
export const podScript = String.raw`
const net = require('node:net'), dgram = require('node:dgram');
const a = JSON.parse(process.env.KP_ARGS);
let pending = 5;
const ready = () => { if (--pending === 0) process.stdout.write('ready\n'); };
const srv = (port, fn) => net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); fn(s); }).listen(port, '0.0.0.0', ready);
srv(8080, (s) => s.end(a.id + '\n'));
srv(8081, (s) => { s.write(a.id + '\n'); s.on('data', (d) => s.write(d)); s.on('end', () => s.end()); });
srv(8082, (s) => { let n = 0; s.on('data', (d) => { n += d.length; }); s.on('end', () => s.end('got ' + n + '\n' + 'x'.repeat(1 << 20))); });
const chunk = Buffer.alloc(1 << 16, 0x62);
srv(8083, (s) => { let sent = 0; const pump = () => { while (sent < (256 << 20)) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); }; pump(); });
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(a.id + '\n', r.port, r.address));
u.bind(8080, '0.0.0.0', ready);
`;

export interface PodServer {
  stop(): void;
}

export async function startPod(p: Pod): Promise<PodServer> {
  const child = nodeIn(p.ns, podScript, { id: p.name });
  const first = await withTimeout(lineOf(child), 30_000, `${p.name} start`);
  if (first !== 'ready') throw new Error(`${p.name} said ${first}`);
  return { stop: () => child.kill('SIGKILL') };
}

export function lineOf(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    rl.once('line', (l) => { rl.close(); resolve(l); });
    child.once('close', (code) => reject(new Error(`exited ${code}: ${err}`)));
  });
}

/** Runs a client script in `ns` to its end and parses its one JSON line. */
export async function runClient<T>(ns: string, script: string, args: unknown, timeoutMs = 60_000): Promise<T> {
  const child = nodeIn(ns, script, args);
  child.stdin!.end();
  return JSON.parse(await withTimeout(lineOf(child), timeoutMs, 'client')) as T;
}

// Greets, then pings every 100 ms until stdin closes; counts echoes.
export const longClient = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
const s = net.connect(a.port, a.host);
let buf = '', greeting = '', pings = 0, echoes = 0, error = '', closed = false;
s.setEncoding('utf8');
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); if (!greeting) { greeting = l; process.stdout.write('greeted\n'); } else if (l === 'ping') echoes++; } });
s.on('error', (e) => { error = e.code; });
s.on('close', () => { closed = true; });
const timer = setInterval(() => { if (!closed && greeting) { pings++; s.write('ping\n'); } }, 100);
process.stdin.on('data', () => {});
process.stdin.on('end', () => { clearInterval(timer); setTimeout(() => { process.stdout.write(JSON.stringify({ greeting, pings, echoes, error, closed }) + '\n'); s.destroy(); }, 300); });
`;

/** What a longClient says when it ends. */
export interface LongClientResult {
  readonly greeting: string;
  readonly pings: number;
  readonly echoes: number;
  readonly error: string;
  readonly closed: boolean;
}

/** Ends a running longClient (closes its stdin) and reads its summary. */
export async function endLongClient(child: ChildProcess): Promise<LongClientResult> {
  const result = lineOf(child);
  child.stdin!.end();
  return JSON.parse(await withTimeout(result, 10_000, 'long client result')) as LongClientResult;
}

export const halfCloseClient = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
const s = net.connect({ host: a.host, port: a.port, allowHalfOpen: true });
let n = 0, head = '', error = '';
s.on('connect', () => { s.write(Buffer.alloc(a.bytes, 0x61)); s.end(); });
s.on('data', (d) => { if (head.length < 40) head += d.toString('latin1').slice(0, 40); n += d.length; });
s.on('error', (e) => { error = e.code; });
s.on('close', () => process.stdout.write(JSON.stringify({ head: head.split('\n')[0], length: n, error }) + '\n'));
`;

export const slowReader = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
const s = net.connect(a.port, a.host);
let n = 0;
s.on('data', (d) => { n += d.length; s.pause(); setTimeout(() => s.resume(), 50); });
s.on('error', () => {});
setTimeout(() => { process.stdout.write(JSON.stringify({ read: n }) + '\n'); s.destroy(); }, a.ms);
`;
