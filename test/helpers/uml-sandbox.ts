// Network namespaces inside a user-mode-linux guest, laid out like the
// host sandbox of netns.ts (same addresses), and real traffic through them:
//
//   client (192.168.50.2) ── veth ── node (192.168.50.1, br0 10.180.0.1) ── br0 ── pod-1..N (10.180.0.11..)
//
// `node` holds the IPVS table. Backends answer with their pod's name (the
// host helpers' scripts, run by the guest's Node.js); a held connection
// stays open and echoes lines, for what happens to an established
// connection while its real server drains or goes.
import { addresses, type Pod } from './netns.ts';
import { clientScript, serverScript, withTimeout, type ClientResult, type ConnectOptions } from './traffic.ts';
import { guestPath, type GuestProcess, type RunOptions, type RunResult, type Uml } from './uml.ts';

export { addresses };

export interface UmlSandbox {
  /** Namespace of the node: the IPVS table, kube-ipvs0 and ip_forward live here. */
  readonly node: string;
  readonly client: string;
  readonly pods: readonly Pod[];
  /** Runs a command inside namespace `ns` of the guest; rejects on a non-zero exit. */
  exec(ns: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** As exec, resolving whatever the exit status. */
  run(ns: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Kills what runs in the namespaces and deletes them; safe to call twice. */
  destroy(): Promise<void>;
}

let sandboxes = 0;

export async function createUmlSandbox(uml: Uml, opts: { pods?: number } = {}): Promise<UmlSandbox> {
  const id = `s${++sandboxes}`;
  const node = `${id}-node`;
  const client = `${id}-client`;
  const pods: Pod[] = Array.from({ length: opts.pods ?? 3 }, (_, k) => ({ name: `pod-${k + 1}`, ns: `${id}-pod${k + 1}`, ip: addresses.podIP(k + 1) }));
  const namespaces = [node, client, ...pods.map((p) => p.ns)];
  const inNs = (ns: string, argv: readonly string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv];
  let destroyed = false;
  const sandbox: UmlSandbox = {
    node, client, pods,
    exec: (ns, argv, o) => uml.exec(inNs(ns, argv), o),
    run: (ns, argv, o) => uml.run(inNs(ns, argv), o),
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await uml.run(['sh', '-c', namespaces.map((ns) => `for p in $(ip netns pids ${ns}); do kill -9 $p; done; ip netns del ${ns}`).join('\n')]);
    },
  };
  // One shell in the guest builds everything: each process start costs tens of ms there.
  const script = [
    ...namespaces.map((ns) => `ip netns add ${ns}`),
    `ip -n ${node} -batch - <<EOF
link set lo up
link add br0 type bridge
addr add ${addresses.bridgeIP}/24 dev br0
link set br0 up
link add vc0 type veth peer name eth0 netns ${client}
addr add ${addresses.nodeIP}/24 dev vc0
link set vc0 up
${pods.map((p, k) => `link add vp${k + 1} type veth peer name eth0 netns ${p.ns}\nlink set vp${k + 1} master br0\nlink set vp${k + 1} up`).join('\n')}
EOF`,
    `ip -n ${client} -batch - <<EOF
link set lo up
addr add ${addresses.clientIP}/24 dev eth0
link set eth0 up
route add default via ${addresses.nodeIP}
EOF`,
    ...pods.map((p) => `ip -n ${p.ns} -batch - <<EOF
link set lo up
addr add ${p.ip}/24 dev eth0
link set eth0 up
route add default via ${addresses.bridgeIP}
EOF`),
    // Forwarding on; no ICMP rate limit or redirects to hide refusals (KERNEL-TESTING.md).
    `ip netns exec ${node} sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv4/icmp_ratelimit; echo 0 > /proc/sys/net/ipv4/conf/all/send_redirects'`,
  ].join('\n');
  try {
    await uml.sh(`set -e\n${script}`);
  } catch (e) {
    await sandbox.destroy();
    throw e;
  }
  return sandbox;
}

const node = guestPath(process.execPath);

function nodeIn(uml: Uml, ns: string, script: string, args: unknown): Promise<GuestProcess> {
  return uml.spawn(['ip', 'netns', 'exec', ns, node, '-e', script], { env: { KP_ARGS: JSON.stringify(args) } });
}

// A TCP port whose connections stay open: the server says its name, then
// answers every line with "name:line".
const heldServerScript = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
let pending = a.held.length;
for (const port of a.held) {
  net.createServer((s) => {
    s.on('error', () => {});
    s.write(a.id + '\n');
    let buf = '';
    s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { s.write(a.id + ':' + buf.slice(0, i) + '\n'); buf = buf.slice(i + 1); } });
  }).listen(port, '0.0.0.0', () => { if (--pending === 0) process.stdout.write('ready\n'); });
}
`;

export interface UmlBackends {
  stop(): Promise<void>;
}

/** One server per pod answering with its name: TCP and UDP ports answer and close, `held` ports stay open. */
export async function startUmlBackends(uml: Uml, pods: readonly Pod[], ports: { tcp?: readonly number[]; udp?: readonly number[]; held?: readonly number[] }): Promise<UmlBackends> {
  const started: GuestProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const p of started) await p.kill();
  };
  try {
    for (const p of pods) {
      const answer = await nodeIn(uml, p.ns, serverScript, { id: p.name, tcp: ports.tcp ?? [], udp: ports.udp ?? [] });
      started.push(answer);
      if (ports.held?.length) started.push(await nodeIn(uml, p.ns, heldServerScript, { id: p.name, held: ports.held }));
    }
    for (const p of started) {
      const line = await p.nextLine(60_000);
      if (line !== 'ready') throw new Error(`a backend said ${line}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { stop };
}

/** Makes `count` connections (or datagrams) from namespace `ns` of the guest and counts answers per backend. */
export async function connectManyInUml(uml: Uml, ns: string, host: string, port: number, opts: ConnectOptions = {}): Promise<ClientResult> {
  const args = {
    host, port, protocol: opts.protocol ?? 'tcp', count: opts.count ?? 100,
    concurrency: opts.concurrency ?? 10, timeoutMs: opts.timeoutMs ?? 1000, continuous: false, intervalMs: 0,
  };
  const r = await uml.exec(['ip', 'netns', 'exec', ns, node, '-e', clientScript], { env: { KP_ARGS: JSON.stringify(args) }, input: '' });
  return JSON.parse(r.stdout) as ClientResult;
}

// One TCP connection kept open: prints {kind:'hello', answer} with the
// server's first line, then one {kind, answer} per stdin line sent.
const heldClientScript = String.raw`
const net = require('node:net'), readline = require('node:readline');
const a = JSON.parse(process.env.KP_ARGS);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const s = net.connect({ host: a.host, port: a.port, ...(a.localPort ? { localPort: a.localPort } : {}) });
let buf = '', waiting = null, greeted = false;
const answer = (o) => { if (waiting) { clearTimeout(waiting); waiting = null; say(o); } };
s.setEncoding('utf8');
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); if (!greeted) { greeted = true; say({ kind: 'hello', answer: l }); } else answer({ kind: 'ok', answer: l }); } });
s.on('error', (e) => { if (!greeted) { greeted = true; say({ kind: e.code || 'ERROR', answer: '' }); } else answer({ kind: e.code || 'ERROR', answer: '' }); });
s.on('end', () => answer({ kind: 'END', answer: '' }));
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'close') { s.end(); return; }
  waiting = setTimeout(() => { waiting = null; say({ kind: 'TIMEOUT', answer: '' }); }, a.timeoutMs);
  s.write(l + '\n');
});
process.stdin.on('end', () => { s.destroy(); process.exit(0); });
`;

export interface HeldAnswer {
  /** ok, TIMEOUT, END (closed by the peer), or an error code such as ECONNRESET. */
  readonly kind: string;
  readonly answer: string;
}

export interface HeldConnection {
  /** The backend that accepted the connection (or the error kind when it failed). */
  readonly backend: string;
  /** Sends a line and waits for its echo ("pod-2:line"), a timeout or an error. */
  ask(line: string): Promise<HeldAnswer>;
  /** Closes the connection cleanly (FIN) and ends the client. */
  close(): Promise<void>;
}

/** Opens one long-lived TCP connection from namespace `ns` (optionally from a fixed local port). */
export async function openHeldConnection(uml: Uml, ns: string, host: string, port: number, opts: { localPort?: number; timeoutMs?: number } = {}): Promise<HeldConnection> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const p = await nodeIn(uml, ns, heldClientScript, { host, port, localPort: opts.localPort, timeoutMs });
  const read = async (): Promise<HeldAnswer> => JSON.parse(await p.nextLine(timeoutMs + 30_000)) as HeldAnswer;
  const hello = await read();
  return {
    backend: hello.kind === 'hello' ? hello.answer : hello.kind,
    async ask(line) {
      await p.write(`${line}\n`);
      return read();
    },
    async close() {
      await p.write('close\n').catch(() => { /* gone */ });
      await p.end().catch(() => { /* gone */ });
      await withTimeout(p.exited, 10_000, 'held connection close').catch(() => p.kill());
    },
  };
}

// One TCP connection (optionally from a fixed local port) that reads until
// the server closes and prints {kind, answer}.
const onceClientScript = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
const say = (o) => { process.stdout.write(JSON.stringify(o) + '\n'); };
const s = net.connect({ host: a.host, port: a.port, ...(a.localPort ? { localPort: a.localPort } : {}) });
let buf = '';
const timer = setTimeout(() => { say({ kind: 'TIMEOUT', answer: buf.trim() }); process.exit(0); }, a.timeoutMs);
s.setEncoding('utf8');
s.on('data', (d) => { buf += d; });
s.on('end', () => { clearTimeout(timer); say({ kind: 'ok', answer: buf.trim() }); });
s.on('error', (e) => { clearTimeout(timer); say({ kind: e.code || 'ERROR', answer: '' }); });
`;

/** One short TCP connection from namespace `ns`: which backend answered (or how it failed). */
export async function connectOnceInUml(uml: Uml, ns: string, host: string, port: number, opts: { localPort?: number; timeoutMs?: number } = {}): Promise<HeldAnswer> {
  const args = { host, port, localPort: opts.localPort, timeoutMs: opts.timeoutMs ?? 2000 };
  const r = await uml.exec(['ip', 'netns', 'exec', ns, node, '-e', onceClientScript], { env: { KP_ARGS: JSON.stringify(args) }, input: '' });
  return JSON.parse(r.stdout) as HeldAnswer;
}
