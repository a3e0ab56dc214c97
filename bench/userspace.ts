// The userspace forwarder against haproxy and against kernel DNAT, in one
// run, in the same veth lab (test/helpers/netns.ts: a client namespace,
// the node namespace holding the proxies, three backend pods on a bridge).
//
//   node bench/userspace.ts [--seconds 4] [--rounds 3] [--idle 10000] [--only stream,crr,udp,latency,idle] [--rate N] [--workers 2] [--relay auto|native|node] [--quick]
//
// Peers, each on its own Service address in the node namespace, with the
// same three backends:
// - haproxy 2.6 (Debian) in tcp mode, `nbthread 2`, roundrobin;
// - kproxy's userspace forwarder (two worker processes, the native TCP
//   relay when the addon is built);
// - kernel DNAT: kproxy's nftables mode, programmed through its backend.
// Figures (rounds interleaved, median kept): TCP stream throughput over one
// connection; new connections per second (32 clients, each connection
// closed after one request and its first answer byte); p99 connect-to-
// first-byte latency at half of haproxy's peak rate (open loop); UDP
// request/response rate (32 sockets in lock step; haproxy has no UDP);
// memory per idle open connection (process RSS, 10,000 open; haproxy
// cannot hold that many here, see below). Proxy CPU is each proxy's own
// user+system time; kernel DNAT's runs in softirq and has no process.
// The load generator is Node.js in the client namespace, the backends
// Node.js in the pods: both cost the same for every peer. The lab sets
// net.ipv4.tcp_tw_reuse=1 and a wide ephemeral port range in the client
// and node namespaces (tens of thousands of short connections a second
// would otherwise run out of ports), for every peer alike.
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { accessSync, constants } from 'node:fs';
import { netnsExec, toolPath } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import { modeOf } from '../modes/registry.ts';
import { syncBackend } from '../modes/sync.ts';
import { fullChanges, serviceKey, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { createSandbox, type Sandbox } from '../test/helpers/netns.ts';
import { nodeIn, withTimeout } from '../test/helpers/traffic.ts';
import { startForwarder, type ForwarderProcess } from '../test/helpers/userspace-process.ts';
import type { ListenerSpec } from '../modes/userspace/table.ts';
import { endpoint, pct, service } from './fixtures.ts';
import { flagValue } from './args.ts';

const FIGURES = ['stream', 'crr', 'udp', 'latency', 'idle'] as const;
type Figure = (typeof FIGURES)[number];
interface Args { seconds: number; rounds: number; idle: number; quick: boolean; only: ReadonlySet<Figure>; rate: number; workers: number; relay: 'auto' | 'native' | 'node' }

function parseArgs(argv: string[]): Args {
  const quick = argv.includes('--quick');
  const seconds = Number(flagValue(argv, '--seconds') ?? (quick ? 1 : 4));
  const rounds = Number(flagValue(argv, '--rounds') ?? (quick ? 1 : 3));
  const idle = Number(flagValue(argv, '--idle') ?? (quick ? 1000 : 10_000));
  if (!(seconds > 0 && seconds <= 20) || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(idle) || idle < 10 || idle > 10_000) {
    throw new Error('--seconds takes (0, 20], --rounds an integer ≥ 1, --idle an integer in 10..10000');
  }
  const only = new Set((flagValue(argv, '--only') ?? FIGURES.join(',')).split(',') as Figure[]);
  for (const f of only) if (!FIGURES.includes(f)) throw new Error(`--only takes some of ${FIGURES.join(',')}`);
  // The latency run's rate; by default half of haproxy's peak measured in the same run (needs crr).
  const rate = Number(flagValue(argv, '--rate') ?? 0);
  if (only.has('latency') && !only.has('crr') && !(rate > 0)) throw new Error('--only latency without crr needs --rate N');
  const workers = Number(flagValue(argv, '--workers') ?? 2);
  if (!Number.isInteger(workers) || workers < 1 || workers > 16) throw new Error('--workers takes an integer in 1..16');
  const relay = (flagValue(argv, '--relay') ?? 'auto') as Args['relay'];
  if (!['auto', 'native', 'node'].includes(relay)) throw new Error('--relay takes auto, native or node');
  return { seconds, rounds, idle, quick, only, rate, workers, relay };
}

const PEERS = ['haproxy', 'kproxy', 'nftables'] as const;
type Peer = (typeof PEERS)[number];
const VIP: Record<Peer, string> = { haproxy: '10.96.0.20', kproxy: '10.96.0.30', nftables: '10.96.0.40' };
// Service ports: 80 one request per connection, 90 stream sink, 82 idle holder; UDP 53 echo.
const PORTS = { crr: 80, stream: 90, hold: 82, udp: 53 } as const;
const TARGET = { crr: 8080, stream: 9000, hold: 8082, udp: 8081 } as const;
// haproxy needs two descriptors per connection and this machine's hard limit is 20,000.
const HAPROXY_MAXCONN = 9900;

// Per pod: answers one request per connection, sinks a stream, holds idle connections, echoes UDP.
const podScript = String.raw`
const net = require('node:net'), dgram = require('node:dgram');
let pending = 4;
const ready = () => { if (--pending === 0) process.stdout.write('ready\n'); };
net.createServer({ noDelay: true }, (s) => { s.on('error', () => {}); s.once('data', () => s.end('ok\n')); }).listen({ port: 8080, backlog: 4096 }, ready);
net.createServer((s) => { s.on('error', () => {}); s.resume(); s.on('end', () => s.end()); }).listen(9000, ready);
net.createServer((s) => { s.on('error', () => {}); }).listen({ port: 8082, backlog: 4096 }, ready);
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(m, r.port, r.address));
u.bind(8081, ready);
`;

// The load generator: one JSON line per run.
const loadScript = String.raw`
const net = require('node:net'), dgram = require('node:dgram');
const a = JSON.parse(process.env.KP_ARGS);
const out = (v) => { process.stdout.write(JSON.stringify(v) + '\n'); process.exit(0); };
const now = () => Number(process.hrtime.bigint()) / 1e6;
if (a.mode === 'stream') {
  const buf = Buffer.alloc(256 * 1024, 7);
  let n = 0;
  const s = net.connect(a.port, a.host, () => {
    const t0 = now();
    const pump = () => { while (now() - t0 < a.ms) { n += buf.length; if (!s.write(buf)) return s.once('drain', pump); } s.end(); };
    s.on('end', () => out({ bytes: n, ms: now() - t0 }));
    pump();
  });
  s.on('error', (e) => out({ error: e.code }));
} else if (a.mode === 'crr') {
  let n = 0, errors = 0, stop = false;
  const t0 = now();
  const one = () => {
    if (stop) return;
    const s = net.connect(a.port, a.host);
    s.setNoDelay(true);
    s.on('connect', () => s.write('GET\n'));
    s.once('data', () => { n++; s.destroy(); one(); });
    s.on('error', () => { errors++; s.destroy(); setTimeout(one, 5); });
  };
  for (let i = 0; i < a.clients; i++) one();
  setTimeout(() => { stop = true; out({ conns: n, errors, ms: now() - t0 }); }, a.ms);
} else if (a.mode === 'rate') {
  // Open loop: connections start on schedule whatever the answers do.
  const lat = [];
  let errors = 0, started = 0, inflight = 0;
  const t0 = now();
  const tick = setInterval(() => {
    const due = Math.floor(((now() - t0) / 1000) * a.rate);
    while (started < due) {
      started++;
      inflight++;
      const t = now();
      const s = net.connect(a.port, a.host);
      s.setNoDelay(true);
      s.on('connect', () => s.write('GET\n'));
      s.once('data', () => { lat.push(now() - t); inflight--; s.destroy(); });
      s.on('error', () => { errors++; inflight--; s.destroy(); });
    }
    if (now() - t0 >= a.ms) {
      clearInterval(tick);
      const wait = setInterval(() => { if (inflight === 0 || now() - t0 > a.ms + 5000) { clearInterval(wait); lat.sort((x, y) => x - y); out({ started, answered: lat.length, errors, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.min(lat.length - 1, Math.ceil(lat.length * 0.99) - 1)] }); } }, 20);
    }
  }, 1);
} else if (a.mode === 'udp') {
  let n = 0, stop = false;
  const t0 = now();
  for (let i = 0; i < a.clients; i++) {
    const s = dgram.createSocket('udp4');
    let timer;
    const ask = () => { if (stop) return; clearTimeout(timer); timer = setTimeout(ask, 200); s.send('ping'); };
    s.on('message', () => { n++; ask(); });
    s.on('error', () => {});
    s.connect(a.port, a.host, ask);
  }
  setTimeout(() => { stop = true; out({ replies: n, ms: now() - t0 }); }, a.ms);
} else if (a.mode === 'hold') {
  // Opens a.count connections and keeps them until stdin closes.
  let open = 0, errors = 0, started = 0;
  const socks = [];
  const next = () => {
    while (started < a.count && started - open - errors < 200) {
      started++;
      const s = net.connect(a.port, a.host);
      socks.push(s);
      s.on('connect', () => { open++; if (open + errors === a.count) process.stdout.write(JSON.stringify({ open, errors }) + '\n'); next(); });
      s.on('error', () => { errors++; if (open + errors === a.count) process.stdout.write(JSON.stringify({ open, errors }) + '\n'); next(); });
    }
  };
  next();
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => { for (const s of socks) s.destroy(); process.exit(0); });
}
`;

function lineOf(child: ChildProcess, what: string, ms: number): Promise<string> {
  return withTimeout(new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    rl.once('line', (l) => { rl.close(); resolve(l); });
    child.once('close', (code) => reject(new Error(`${what} exited ${code}: ${err.trim()}`)));
  }), ms, what);
}

async function load<T>(sb: Sandbox, args: Record<string, unknown>, ms: number): Promise<T> {
  const child = nodeIn(sb.client, loadScript, args);
  child.stdin!.end();
  return JSON.parse(await lineOf(child, `load ${String(args.mode)}`, ms + 30_000)) as T;
}

/** user+system ticks (1/100 s) of processes. */
function cpuTicks(pids: readonly number[]): number {
  let t = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      t += Number(rest[11]) + Number(rest[12]);
    } catch {
      // gone
    }
  }
  return t;
}

function rssKiB(pids: readonly number[]): number {
  let kib = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      kib += m ? Number(m[1]) : 0;
    } catch {
      // gone
    }
  }
  return kib;
}

const median = (xs: number[]): number => pct(xs, 50);

interface Lab {
  sb: Sandbox;
  haproxyPid: number;
  fwd: ForwarderProcess;
  dir: string;
}

async function setUp(dir: string, workers: number, relay: Args['relay']): Promise<Lab> {
  const sb = await createSandbox({ prefix: 'kpub' });
  try {
    const pods = sb.pods.map((p) => nodeIn(p.ns, podScript, {}));
    await Promise.all(pods.map((c, i) => lineOf(c, `pod ${i + 1}`, 30_000)));
    const exec = netnsExec(sb.node);
    // Lab tuning for every peer alike: tens of thousands of short connections a second wrap the ephemeral ports.
    for (const ns of [sb.node, sb.client]) {
      await sb.exec(ns, 'sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse; echo "1024 65000" > /proc/sys/net/ipv4/ip_local_port_range']);
    }
    // haproxy.
    await exec('ip', ['address', 'add', `${VIP.haproxy}/32`, 'dev', 'lo']);
    const servers = (port: number) => sb.pods.map((p, i) => `  server s${i + 1} ${p.ip}:${port}`).join('\n');
    const cfg = `global\n  nbthread 2\n  maxconn ${HAPROXY_MAXCONN}\n  pidfile ${dir}/haproxy.pid\ndefaults\n  mode tcp\n  balance roundrobin\n  maxconn ${HAPROXY_MAXCONN}\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n` +
      (['crr', 'stream', 'hold'] as const).map((k) => `listen ${k}\n  bind ${VIP.haproxy}:${PORTS[k]}\n${servers(TARGET[k])}\n`).join('');
    writeFileSync(join(dir, 'haproxy.cfg'), cfg);
    await exec('haproxy', ['-D', '-f', join(dir, 'haproxy.cfg')]);
    const haproxyPid = Number(readFileSync(join(dir, 'haproxy.pid'), 'utf8').trim());
    // kproxy's userspace forwarder.
    const fwd = await startForwarder(sb.node, { workers, engine: { relay } });
    await fwd.addresses([VIP.kproxy]);
    const listener = (k: keyof typeof PORTS, protocol: 'TCP' | 'UDP'): ListenerSpec => ({
      ip: VIP.kproxy, port: PORTS[k], protocol, service: `bench/${k}:${PORTS[k]}`, algorithm: 'rr', affinitySeconds: 0, sourceRanges: [],
      remote: { endpoints: sb.pods.map((p) => ({ ip: p.ip, port: TARGET[k] })), whenEmpty: 'reject' },
    });
    const r = await fwd.apply({ clusterSources: [], listeners: [listener('crr', 'TCP'), listener('stream', 'TCP'), listener('hold', 'TCP'), listener('udp', 'UDP')] });
    if (r.result.failed.length > 0) throw new Error(`forwarder: ${JSON.stringify(r.result.failed)}`);
    // Kernel DNAT through kproxy's nftables backend.
    const services = new Map<string, ServicePortState>();
    (['crr', 'stream', 'hold', 'udp'] as const).forEach((k, i) => {
      const base = service(i, sb.pods.map((p) => ({ ...endpoint(p.ip), port: TARGET[k] })), VIP.nftables);
      const protocol = k === 'udp' ? 'UDP' : 'TCP';
      const name = `bench/${k}:p`;
      services.set(serviceKey(4, name, protocol), { ...base, name, key: serviceKey(4, name, protocol), serviceName: k, protocol, port: PORTS[k] });
    });
    const state: NodeState = { nodeName: 'bench', nodeIPs: ['192.168.50.1'], services };
    const backend = modeOf('nftables').create({ families: [4], clusterCIDRs: ['10.180.0.0/16'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec }, silentLogger());
    const synced = await syncBackend(backend, state, fullChanges(state));
    if (!synced.ok) throw synced.error ?? new Error('nftables sync failed');
    return { sb, haproxyPid, fwd, dir };
  } catch (e) {
    await sb.destroy();
    throw e;
  }
}

function pidsOf(lab: Lab, peer: Peer): number[] {
  if (peer === 'haproxy') return [lab.haproxyPid];
  if (peer === 'kproxy') return [...lab.fwd.pids, lab.fwd.child.pid ?? 0];
  return [];
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces): run as root');
  try {
    accessSync(toolPath('haproxy'), constants.X_OK);
  } catch {
    throw new Error('haproxy is missing: apt-get install -y haproxy');
  }
  const dir = mkdtempSync(join(tmpdir(), 'kpx-usbench-'));
  const lab = await setUp(dir, a.workers, a.relay);
  const ms = a.seconds * 1000;
  const results: Record<string, Record<Peer, number[]>> = {};
  const add = (metric: string, peer: Peer, v: number) => {
    results[metric] ??= { haproxy: [], kproxy: [], nftables: [] };
    results[metric][peer].push(v);
  };
  try {
    const snap = await lab.fwd.snapshot();
    console.log(`userspace: ${a.rounds} round(s) of ${a.seconds} s per figure, peers interleaved; kproxy relays: ${snap.relay}, ${snap.workers} workers`);
    // Memory per idle open connection, first, while every proxy is fresh (later figures leave freed memory behind to reuse).
    const idleCount: Partial<Record<Peer, number>> = {};
    for (const peer of a.only.has('idle') ? (['haproxy', 'kproxy'] as const) : []) {
      const count = peer === 'haproxy' ? Math.min(a.idle, HAPROXY_MAXCONN - 100) : a.idle;
      const pids = pidsOf(lab, peer);
      const before = rssKiB(pids);
      const holder = nodeIn(lab.sb.client, loadScript, { mode: 'hold', host: VIP[peer], port: PORTS.hold, count });
      const h = JSON.parse(await lineOf(holder, 'hold', 120_000)) as { open: number; errors: number };
      await new Promise((r) => setTimeout(r, 1000));
      const after = rssKiB(pids);
      holder.stdin!.end();
      await new Promise((r) => holder.once('close', r));
      idleCount[peer] = h.open;
      add('idle connections held', peer, h.open);
      add('KiB per idle connection', peer, (after - before) / Math.max(1, h.open));
      await new Promise((r) => setTimeout(r, 1500));
    }
    for (let round = 0; round < a.rounds; round++) {
      for (const peer of PEERS) {
        const pids = pidsOf(lab, peer);
        if (a.only.has('stream')) {
          const c0 = cpuTicks(pids);
          const s = await load<{ bytes: number; ms: number; error?: string }>(lab.sb, { mode: 'stream', host: VIP[peer], port: PORTS.stream, ms }, ms);
          if (s.error) throw new Error(`${peer} stream: ${s.error}`);
          add('stream Gbit/s', peer, (s.bytes * 8) / 1e9 / (s.ms / 1000));
          if (pids.length) add('stream proxy CPU s/GB', peer, (cpuTicks(pids) - c0) / 100 / (s.bytes / 1e9));
        }
        if (a.only.has('crr')) {
          const c0 = cpuTicks(pids);
          const c = await load<{ conns: number; errors: number; ms: number }>(lab.sb, { mode: 'crr', host: VIP[peer], port: PORTS.crr, clients: 32, ms }, ms);
          add('new connections/s', peer, c.conns / (c.ms / 1000));
          add('connection errors', peer, c.errors);
          if (pids.length) add('proxy CPU µs/connection', peer, ((cpuTicks(pids) - c0) * 10_000) / c.conns);
        }
        if (peer !== 'haproxy' && a.only.has('udp')) {
          const u = await load<{ replies: number; ms: number }>(lab.sb, { mode: 'udp', host: VIP[peer], port: PORTS.udp, clients: 32, ms }, ms);
          add('UDP requests/s', peer, u.replies / (u.ms / 1000));
        }
      }
    }
    // Latency at half of haproxy's peak rate, open loop.
    const rate = a.rate > 0 ? a.rate : a.only.has('crr') ? Math.max(100, Math.round(median(results['new connections/s'].haproxy) / 2)) : 0;
    for (let round = 0; round < a.rounds && a.only.has('latency'); round++) {
      for (const peer of PEERS) {
        const r = await load<{ started: number; answered: number; errors: number; p50: number; p99: number }>(lab.sb, { mode: 'rate', host: VIP[peer], port: PORTS.crr, rate, ms }, ms);
        add('p50 connect-to-first-byte ms', peer, r.p50);
        add('p99 connect-to-first-byte ms', peer, r.p99);
        add('latency run errors', peer, r.errors + (r.started - r.answered - r.errors));
      }
    }
    report(results, rate, a, idleCount);
  } finally {
    try {
      process.kill(lab.haproxyPid, 'SIGKILL');
    } catch {
      // gone
    }
    await lab.fwd.stop().catch(() => undefined);
    await lab.sb.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(results: Record<string, Record<Peer, number[]>>, rate: number, a: Args, idle: Partial<Record<Peer, number>>): void {
  const fmt = (v: number | undefined, digits = 1) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(digits));
  const m = (metric: string, peer: Peer) => (results[metric]?.[peer].length ? median(results[metric][peer]) : undefined);
  console.log(`\n| figure | haproxy 2.6 (nbthread 2) | kproxy userspace | kernel DNAT (nftables mode) | kproxy / haproxy | kproxy / DNAT |`);
  console.log('|---|---|---|---|---|---|');
  const row = (metric: string, digits = 1) => {
    const [h, k, n] = PEERS.map((p) => m(metric, p));
    console.log(`| ${metric} | ${fmt(h, digits)} | ${fmt(k, digits)} | ${fmt(n, digits)} | ${h && k !== undefined ? (k / h).toFixed(2) : '—'} | ${n && k !== undefined ? (k / n).toFixed(2) : '—'} |`);
  };
  row('stream Gbit/s', 2);
  row('stream proxy CPU s/GB', 2);
  row('new connections/s', 0);
  row('connection errors', 0);
  row('proxy CPU µs/connection', 1);
  row('p50 connect-to-first-byte ms', 2);
  row('p99 connect-to-first-byte ms', 2);
  row('latency run errors', 0);
  row('UDP requests/s', 0);
  row('idle connections held', 0);
  row('KiB per idle connection', 2);
  if (rate > 0) console.log(`\nlatency at ${rate} new connections/s${a.rate > 0 ? '' : " (half of haproxy's median peak)"}`);
  console.log(`every round: ${JSON.stringify(results)}`);
  const k = (metric: string) => m(metric, 'kproxy') ?? NaN;
  const h = (metric: string) => m(metric, 'haproxy') ?? NaN;
  const checks = ([
    ['stream ≥ haproxy', k('stream Gbit/s') >= h('stream Gbit/s'), `${(k('stream Gbit/s') / h('stream Gbit/s')).toFixed(2)}×`],
    ['new connections/s ≥ 0.8× haproxy', k('new connections/s') >= 0.8 * h('new connections/s'), `${(k('new connections/s') / h('new connections/s')).toFixed(2)}×`],
    ['p99 ≤ haproxy', k('p99 connect-to-first-byte ms') <= h('p99 connect-to-first-byte ms'), `${k('p99 connect-to-first-byte ms').toFixed(2)} vs ${h('p99 connect-to-first-byte ms').toFixed(2)} ms`],
    ['UDP ≥ 0.5× kernel DNAT', k('UDP requests/s') >= 0.5 * (m('UDP requests/s', 'nftables') ?? NaN), `${(k('UDP requests/s') / (m('UDP requests/s', 'nftables') ?? NaN)).toFixed(2)}×`],
    ['< 10 KiB per idle connection', k('KiB per idle connection') < 10, `${k('KiB per idle connection').toFixed(2)} KiB with ${idle.kproxy} open (haproxy measured with ${idle.haproxy})`],
  ] as const).filter(([, , detail]) => !detail.startsWith('NaN'));
  for (const [what, ok, detail] of checks) console.log(`${ok ? 'met    ' : 'NOT MET'} ${what}: ${detail}`);
  if (a.quick) console.log('(--quick: small sizes, one round; figures are indicative only)');
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
