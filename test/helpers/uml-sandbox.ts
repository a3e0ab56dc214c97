// Network namespaces inside a user-mode-linux guest, laid out like the
// host sandbox of netns.ts (same addresses), and real traffic through them:
//
//   client (192.168.50.2) ── veth ── node (192.168.50.1, br0 10.180.0.1) ── br0 ── pod-1..N (10.180.0.11..)
//
// `node` holds the IPVS table. Backends answer with their pod's name; a
// held connection stays open and echoes lines, for what happens to an
// established connection while its real server drains or goes. Starting
// Node.js costs 0.5-1 s in the guest, so each pod runs one server process
// and each client namespace one client process that takes requests.
import { addresses, type Pod } from './netns.ts';
import { clientScript, type ClientResult, type ConnectOptions } from './traffic.ts';
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

// Answers with its pod's name: on `tcp` ports then closes, on `udp` ports per
// datagram; on `held` ports it keeps the connection and answers every line
// with "name:line". Prints "ready" once every port listens.
const backendScript = String.raw`
const net = require('node:net'), dgram = require('node:dgram');
const a = JSON.parse(process.env.KP_ARGS);
let pending = a.tcp.length + a.udp.length + a.held.length;
const ready = () => { if (--pending === 0) process.stdout.write('ready\n'); };
for (const port of a.tcp) net.createServer((s) => { s.on('error', () => {}); s.end(a.id + '\n'); }).listen(port, '0.0.0.0', ready);
for (const port of a.udp) {
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(a.id + '\n', r.port, r.address));
  u.bind(port, '0.0.0.0', ready);
}
for (const port of a.held) {
  net.createServer((s) => {
    s.on('error', () => {});
    s.write(a.id + '\n');
    let buf = '';
    s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { s.write(a.id + ':' + buf.slice(0, i) + '\n'); buf = buf.slice(i + 1); } });
  }).listen(port, '0.0.0.0', ready);
}
if (pending === 0) process.stdout.write('ready\n');
`;

export interface UmlBackends {
  stop(): Promise<void>;
}

/** One server per pod answering with its name (see backendScript). */
export async function startUmlBackends(uml: Uml, pods: readonly Pod[], ports: { tcp?: readonly number[]; udp?: readonly number[]; held?: readonly number[] }): Promise<UmlBackends> {
  const started: GuestProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const p of started) await p.kill();
  };
  try {
    for (const p of pods) started.push(await nodeIn(uml, p.ns, backendScript, { id: p.name, tcp: ports.tcp ?? [], udp: ports.udp ?? [], held: ports.held ?? [] }));
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

/** Makes `count` connections (or datagrams) from namespace `ns` of the guest and counts answers per backend (traffic.ts's client). */
export async function connectManyInUml(uml: Uml, ns: string, host: string, port: number, opts: ConnectOptions = {}): Promise<ClientResult> {
  const args = {
    host, port, protocol: opts.protocol ?? 'tcp', count: opts.count ?? 100,
    concurrency: opts.concurrency ?? 10, timeoutMs: opts.timeoutMs ?? 1000, continuous: false, intervalMs: 0,
  };
  const r = await uml.exec(['ip', 'netns', 'exec', ns, node, '-e', clientScript], { env: { KP_ARGS: JSON.stringify(args) }, input: '' });
  return JSON.parse(r.stdout) as ClientResult;
}

// A client process that takes one JSON request per stdin line and answers
// each with one JSON line carrying the same id:
//   {op:'once', host, port, localPort?, localAddress?, timeoutMs}  connect, read until the server closes
//   {op:'open', host, port, localPort?, localAddress?, timeoutMs}  connect and keep it; answers the greeting
//   {op:'ask', conn, line, timeoutMs}               send a line on a kept connection, wait for its echo
//   {op:'close', conn}                              close a kept connection with FIN
const clientRunnerScript = String.raw`
const net = require('node:net'), readline = require('node:readline');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const conns = new Map();
let next = 0;
function connect(r, onLine, onFail) {
  const s = net.connect({ host: r.host, port: r.port, ...(r.localPort ? { localPort: r.localPort } : {}), ...(r.localAddress ? { localAddress: r.localAddress } : {}) });
  s.setEncoding('utf8');
  let buf = '';
  s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); onLine(l); } });
  s.on('error', (e) => onFail(e.code || 'ERROR'));
  s.on('end', () => onFail('END', buf));
  return s;
}
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const r = JSON.parse(line);
  if (r.op === 'once') {
    let done = false, got = '';
    const finish = (kind, answer) => { if (!done) { done = true; clearTimeout(t); if (kind !== 'ok') s.destroy(); say({ id: r.id, kind, answer }); } };
    const t = setTimeout(() => finish('TIMEOUT', got.trim()), r.timeoutMs);
    const s = connect(r, (l) => { got += l + '\n'; }, (kind, rest) => finish(kind === 'END' ? 'ok' : kind, kind === 'END' ? (got + (rest || '')).trim() : ''));
  } else if (r.op === 'open') {
    const c = { id: ++next, waiting: null, greeted: false };
    const answer = (o) => { if (c.waiting) { const w = c.waiting; c.waiting = null; clearTimeout(w.timer); say({ id: w.id, ...o }); } };
    const t = setTimeout(() => { if (!c.greeted) { c.greeted = true; say({ id: r.id, conn: c.id, kind: 'TIMEOUT', answer: '' }); } }, r.timeoutMs);
    c.socket = connect(r, (l) => {
      if (!c.greeted) { c.greeted = true; clearTimeout(t); say({ id: r.id, conn: c.id, kind: 'hello', answer: l }); } else answer({ kind: 'ok', answer: l });
    }, (kind) => {
      if (!c.greeted) { c.greeted = true; clearTimeout(t); say({ id: r.id, conn: c.id, kind, answer: '' }); } else answer({ kind, answer: '' });
    });
    conns.set(c.id, c);
  } else if (r.op === 'ask') {
    const c = conns.get(r.conn);
    if (!c) return say({ id: r.id, kind: 'NOCONN', answer: '' });
    c.waiting = { id: r.id, timer: setTimeout(() => { c.waiting = null; say({ id: r.id, kind: 'TIMEOUT', answer: '' }); }, r.timeoutMs) };
    c.socket.write(r.line + '\n');
  } else if (r.op === 'close') {
    const c = conns.get(r.conn);
    if (c) { c.socket.end(); conns.delete(r.conn); }
    say({ id: r.id, kind: 'ok', answer: '' });
  }
});
say({ id: 0, kind: 'ready', answer: '' });
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
  /** Closes the connection cleanly (FIN). */
  close(): Promise<void>;
}

export interface UmlClient {
  /** One short TCP connection: which backend answered (or how it failed). */
  once(host: string, port: number, opts?: { localPort?: number; localAddress?: string; timeoutMs?: number }): Promise<HeldAnswer>;
  /** One long-lived TCP connection to a `held` port. */
  open(host: string, port: number, opts?: { localPort?: number; localAddress?: string; timeoutMs?: number }): Promise<HeldConnection>;
  stop(): Promise<void>;
}

/** Starts the client process of namespace `ns`; requests run one after another in the order sent. */
export async function startUmlClient(uml: Uml, ns: string): Promise<UmlClient> {
  const p = await nodeIn(uml, ns, clientRunnerScript, {});
  const waiting = new Map<number, (m: HeldAnswer & { conn?: number }) => void>();
  let ids = 0;
  let failed: Error | undefined;
  const pump = (async () => {
    for (;;) {
      const m = JSON.parse(await p.nextLine(3_600_000)) as HeldAnswer & { id: number; conn?: number };
      waiting.get(m.id)?.(m);
      waiting.delete(m.id);
    }
  })();
  pump.catch((e: Error) => {
    failed = e;
    for (const w of waiting.values()) w({ kind: 'CLIENT-EXITED', answer: e.message });
    waiting.clear();
  });
  const ready = new Promise<unknown>((r) => waiting.set(0, r));
  await ready;
  const request = async (body: Record<string, unknown>): Promise<HeldAnswer & { conn?: number }> => {
    if (failed) throw failed;
    const id = ++ids;
    const answer = new Promise<HeldAnswer & { conn?: number }>((r) => waiting.set(id, r));
    await p.write(`${JSON.stringify({ id, ...body })}\n`);
    return answer;
  };
  return {
    async once(host, port, o = {}) {
      const { kind, answer } = await request({ op: 'once', host, port, localPort: o.localPort, localAddress: o.localAddress, timeoutMs: o.timeoutMs ?? 2000 });
      return { kind, answer };
    },
    async open(host, port, o = {}) {
      const timeoutMs = o.timeoutMs ?? 2000;
      const hello = await request({ op: 'open', host, port, localPort: o.localPort, localAddress: o.localAddress, timeoutMs });
      const conn = hello.conn;
      return {
        backend: hello.kind === 'hello' ? hello.answer : hello.kind,
        async ask(line) {
          const { kind, answer } = await request({ op: 'ask', conn, line, timeoutMs });
          return { kind, answer };
        },
        async close() {
          await request({ op: 'close', conn });
        },
      };
    },
    async stop() {
      await p.kill();
    },
  };
}
