// Scale benchmark of the nftables mode against a kube-proxy-shaped peer.
//
//   node bench/nftables-scale.ts --services 10000 --endpoints 10 [--quick] [--datapath] [--no-peer | --no-kproxy] [--peer-timeout 900]
//
// kproxy, in a fresh network namespace: the first full sync (TypeScript
// render vs nft time, batch lines and bytes), a periodic full sync on the
// loaded table, 20 single-endpoint changes (render + nft, p50/p95, batch
// size), RSS. The peer is kube-proxy's nftables layout (a chain per Service
// and per endpoint, a verdict map to the Service chains), loaded by the same
// nft in its own fresh namespace, plus one endpoint change on it.
// --datapath: real TCP connections from the node namespace to the first and
// the last Service (listeners in a backend namespace), compared by rate.
// Needs root, nftables, iproute2. bench/datapath.ts reuses the exported
// helpers (state builders, namespaces, the datapath measurement).
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NftablesBackend, nftTool } from '../modes/nftables/backend.ts';
import { ToolError, type Exec } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, serviceKey, type Endpoint, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { flagValue } from './args.ts';
import { endpoint, ipv4, pct, service as benchService, withNetns } from './fixtures.ts';
import { syncBackend } from '../modes/sync.ts';

interface Args { services: number; endpoints: number; datapath: boolean; peer: boolean; kproxy: boolean; peerTimeoutS: number; changes: number }

function parseArgs(argv: string[]): Args {
  const get = (flag: string): string | undefined => flagValue(argv, flag);
  const quick = argv.includes('--quick');
  const services = Number(get('--services') ?? (quick ? 500 : 10000));
  const endpoints = Number(get('--endpoints') ?? (quick ? 5 : 10));
  if (!Number.isInteger(services) || services < 2 || !Number.isInteger(endpoints) || endpoints < 1 || endpoints > 250) {
    throw new Error('--services takes an integer ≥ 2, --endpoints an integer in 1..250');
  }
  return { services, endpoints, datapath: argv.includes('--datapath'), peer: !argv.includes('--no-peer'), kproxy: !argv.includes('--no-kproxy'), peerTimeoutS: Number(get('--peer-timeout') ?? 900), changes: 20 };
}

export const vip = (i: number): string => ipv4(((10 << 24) | (96 << 16)) + i + 1);
/** Address of listener `j` (0-based, < 250) in the backend namespace for the first (0) or last (1) Service dialled. */
export const listenerIP = (side: 0 | 1, j: number): string => `10.250.${side + 1}.${j + 1}`;
/** An address never dialled: endpoint `j` of Service `i` when each has `endpoints`. */
export const syntheticIP = (i: number, j: number, endpoints: number): string => ipv4(((10 << 24) | (128 << 16)) + i * endpoints + j);

/** Endpoints of the first and last Service are real addresses in the backend namespace; the others are never dialled. */
function endpointIP(i: number, j: number, a: Args): string {
  if (i === 0) return listenerIP(0, j);
  if (i === a.services - 1) return listenerIP(1, j);
  return syntheticIP(i, j, a.endpoints);
}

export { endpoint, withNetns };
export const service = (i: number, eps: Endpoint[]): ServicePortState => benchService(i, eps, vip(i));

export const ip = '/usr/sbin/ip';
export const sh = (args: string[]): string => execFileSync(ip, args).toString();

const fmt = (ms: number | undefined): string => (ms === undefined ? 'timeout' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

/**
 * Runs nft in `ns` under /usr/bin/time (Debian package "time") and remembers
 * the last batch's size and the CPU seconds nft used: on a shared machine
 * wall time also counts waiting for a core.
 */
function measuringExec(ns: string): { exec: Exec; last: () => { lines: number; bytes: number; cpuMs: number } } {
  let last = { lines: 0, bytes: 0, cpuMs: 0 };
  const exec: Exec = (tool, args, input) => new Promise((resolve, reject) => {
    const child = spawn(ip, ['netns', 'exec', ns, '/usr/bin/time', '-f', 'KPXCPU %U %S', tool, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('close', (code) => {
      const m = /KPXCPU ([\d.]+) ([\d.]+)\s*$/.exec(err);
      const stderr = err.replace(/(Command exited with non-zero status \d+\n)?KPXCPU .*\s*$/, '');
      if (input !== undefined) last = { lines: input.split('\n').length - 1, bytes: Buffer.byteLength(input), cpuMs: m ? (Number(m[1]) + Number(m[2])) * 1000 : NaN };
      if (code === 0) resolve({ stdout: out, stderr });
      else reject(new ToolError(tool, args, code, stderr));
    });
    child.stdin.end(input ?? '');
  });
  return { exec, last: () => last };
}

const cpuMsOf = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;

interface KproxyResult {
  fullRenderMs: number; fullRenderCpuMs: number; fullNftMs: number; fullNftCpuMs: number; fullLines: number; fullBytes: number;
  periodicMs: number; periodicNftCpuMs: number; changeMs: number[]; changeCpuMs: number[]; changeLines: number; changeBytes: number; rssMB: number;
}

async function benchKproxy(a: Args, ns: string, services: Map<string, ServicePortState>): Promise<KproxyResult> {
  const m = measuringExec(ns);
  const backend = new NftablesBackend({ families: [4], clusterCIDRs: ['10.128.0.0/9'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: m.exec }, silentLogger());
  let state: NodeState = { nodeName: 'bench', nodeIPs: ['10.250.0.1'], services };
  const cpu0 = process.cpuUsage();
  const full = await syncBackend(backend, state, fullChanges(state));
  if (!full.ok) throw full.error;
  const fullRenderCpuMs = cpuMsOf(process.cpuUsage(cpu0));
  const fullSize = m.last();
  const t0 = performance.now();
  const periodic = await syncBackend(backend, state, fullChanges(state));
  if (!periodic.ok) throw periodic.error;
  const periodicMs = performance.now() - t0;
  const periodicNftCpuMs = m.last().cpuMs;

  const changeMs: number[] = [];
  const changeCpuMs: number[] = [];
  let size = { lines: 0, bytes: 0, cpuMs: 0 };
  for (let k = 0; k < a.changes; k++) {
    // Replace one endpoint of a Service in the middle (never the dialled ones).
    const i = 1 + ((k * 7919) % (a.services - 2));
    const old = state.services.get(serviceKey(4, `bench/svc${i}:http`, 'TCP'))!;
    const eps = [...old.clusterEndpoints.slice(1), endpoint(ipv4(((10 << 24) | (127 << 16)) + k + 1))];
    const next = new Map(state.services);
    next.set(old.key, service(i, eps));
    state = { ...state, services: next };
    const t = performance.now();
    const c0 = process.cpuUsage();
    const r = await syncBackend(backend, state, { full: false, services: new Set([old.key]), staleUdpEndpoints: [], staleUdpServiceIPs: [] });
    if (!r.ok) throw r.error;
    changeMs.push(performance.now() - t);
    size = m.last();
    changeCpuMs.push(cpuMsOf(process.cpuUsage(c0)) + size.cpuMs);
  }
  return {
    fullRenderMs: full.renderMs, fullRenderCpuMs, fullNftMs: full.applyMs, fullNftCpuMs: fullSize.cpuMs, fullLines: fullSize.lines, fullBytes: fullSize.bytes,
    periodicMs, periodicNftCpuMs, changeMs, changeCpuMs, changeLines: size.lines, changeBytes: size.bytes, rssMB: process.memoryUsage().rss / 2 ** 20,
  };
}

/** kube-proxy's nftables shape: a chain per Service (numgen vmap to endpoint chains) and per endpoint. */
function peerBatch(a: Args): string {
  const out: string[] = [
    'add table ip peer',
    'add chain ip peer mark-for-masquerade',
    'add rule ip peer mark-for-masquerade meta mark set meta mark | 0x00004000',
    'add map ip peer service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }',
    'add chain ip peer services',
    'add chain ip peer nat-output { type nat hook output priority -100 ; policy accept ; }',
    'add rule ip peer nat-output jump services',
    'add rule ip peer services ip daddr . meta l4proto . th dport vmap @service-ips',
  ];
  for (let i = 0; i < a.services; i++) {
    const svc = `service-${i}`;
    out.push(`add chain ip peer ${svc}`);
    const targets: string[] = [];
    for (let j = 0; j < a.endpoints; j++) {
      const ep = `endpoint-${i}-${j}`;
      const addr = endpointIP(i, j, a);
      out.push(`add chain ip peer ${ep}`, `add rule ip peer ${ep} ip saddr ${addr} jump mark-for-masquerade`, `add rule ip peer ${ep} meta l4proto tcp dnat to ${addr}:8080`);
      targets.push(`${j} : goto ${ep}`);
    }
    out.push(`add rule ip peer ${svc} ip daddr ${vip(i)} tcp dport 80 ip saddr != 10.128.0.0/9 jump mark-for-masquerade`);
    out.push(`add rule ip peer ${svc} numgen random mod ${a.endpoints} vmap { ${targets.join(', ')} }`);
    out.push(`add element ip peer service-ips { ${vip(i)} . tcp . 80 : goto ${svc} }`);
  }
  return out.join('\n') + '\n';
}

/** Runs nft -f - in `ns`, returning wall-clock ms, or undefined after the timeout. */
function timedNft(ns: string, input: string, timeoutS: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(ip, ['netns', 'exec', ns, nftTool, '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) resolve(undefined);
      else if (code !== 0) reject(new Error(`nft failed: ${err.slice(0, 500)}`));
      else resolve(performance.now() - t0);
    });
    child.stdin.end(input);
  });
}

async function benchPeer(a: Args, ns: string): Promise<{ fullMs?: number; changeMs?: number; lines: number }> {
  const batch = peerBatch(a);
  const fullMs = await timedNft(ns, batch, a.peerTimeoutS);
  if (fullMs === undefined) return { lines: batch.split('\n').length - 1 };
  // One endpoint change as kube-proxy makes it: a new endpoint chain, the Service chain rewritten, the old chain deleted.
  const i = a.services >> 1;
  const eps = Array.from({ length: a.endpoints }, (_, j) => (j === 0 ? `endpoint-${i}-new` : `endpoint-${i}-${j}`));
  const change = [
    `add chain ip peer endpoint-${i}-new`,
    `add rule ip peer endpoint-${i}-new ip saddr 10.127.9.9 jump mark-for-masquerade`,
    `add rule ip peer endpoint-${i}-new meta l4proto tcp dnat to 10.127.9.9:8080`,
    `flush chain ip peer service-${i}`,
    `add rule ip peer service-${i} ip daddr ${vip(i)} tcp dport 80 ip saddr != 10.128.0.0/9 jump mark-for-masquerade`,
    `add rule ip peer service-${i} numgen random mod ${a.endpoints} vmap { ${eps.map((e, j) => `${j} : goto ${e}`).join(', ')} }`,
    `flush chain ip peer endpoint-${i}-0`,
    `delete chain ip peer endpoint-${i}-0`,
  ].join('\n') + '\n';
  const changeMs = await timedNft(ns, change, a.peerTimeoutS);
  return { fullMs, changeMs, lines: batch.split('\n').length - 1 };
}

// ---- datapath --------------------------------------------------------------

const serverSource = `
const net = require('node:net');
net.createServer((s) => { s.on('error', () => {}); s.end(); }).listen(8080, '0.0.0.0', () => console.log('ready'));
`;

// One client alternates between the two Services in batches of 50
// connections, so both see the same machine load. Each side's rate comes
// from its median batch time: a rare SYN retransmit (1 s) or a burst of
// load elsewhere on the machine would otherwise decide the comparison.
const clientSource = `
const net = require('node:net');
const targets = [process.argv[2], process.argv[3]];
const seconds = Number(process.argv[4]);
const batches = [[], []];
const cpu = [[], []];
let failed = 0;
const end = Date.now() + seconds * 1000;
function connect(host) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port: 80 });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => { s.destroy(); resolve(false); });
  });
}
(async () => {
  for (let round = 0; Date.now() < end; round++) {
    for (const k of round % 2 ? [1, 0] : [0, 1]) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      for (let i = 0; i < 50; i++) if (!(await connect(targets[k]))) failed++;
      batches[k].push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[k].push((c.user + c.system) / 50);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  console.log(JSON.stringify({ rate: batches.map((b) => 50000 / median(b)), cpuUs: cpu.map(median), slow: batches.map((b) => b.filter((t) => t > 5 * median(b)).map(Math.round)), connections: 50 * (batches[0].length + batches[1].length), failed }));
})();
`;

function runIn(ns: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(ip, ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`client failed: ${err}`))));
  });
}

export interface DatapathResult {
  /** Connections/s to each Service, from the median 50-connection batch. */
  first: number; last: number;
  /** The client's CPU µs (user+system) per connection, median batch: the kernel's rule walk on connect is in its system time. */
  firstCpuUs: number; lastCpuUs: number;
  /** Batches over 5× their side's median (a SYN retransmit costs 1 s): what the medians leave out. */
  stalls: number;
  connections: number;
}

async function benchDatapath(a: Args, node: string, dir: string): Promise<DatapathResult> {
  return measureDatapath(node, dir, a.endpoints, vip(0), vip(a.services - 1), 4);
}

/**
 * Dials `firstVip`:80 and `lastVip`:80 from namespace `node` for `seconds`,
 * interleaved. Their endpoints must be listenerIP(0|1, 0..endpoints-1),
 * port 8080: listeners in a backend namespace made here, behind a veth
 * (node 10.250.0.1, 10.96.0.0/12 routed to the backend side). Writes the
 * client and server scripts to `dir`.
 */
export async function measureDatapath(node: string, dir: string, endpoints: number, firstVip: string, lastVip: string, seconds: number): Promise<DatapathResult> {
  return withNetns(async (backendNs) => {
    const veth = `kb${randomBytes(3).toString('hex')}`;
    sh(['link', 'add', `${veth}n`, 'netns', node, 'type', 'veth', 'peer', 'name', `${veth}b`, 'netns', backendNs]);
    sh(['-n', node, 'addr', 'add', '10.250.0.1/16', 'dev', `${veth}n`]);
    sh(['-n', node, 'link', 'set', `${veth}n`, 'up']);
    sh(['-n', node, 'route', 'add', '10.96.0.0/12', 'via', '10.250.0.2']);
    sh(['-n', backendNs, 'addr', 'add', '10.250.0.2/16', 'dev', `${veth}b`]);
    for (const sub of [1, 2]) for (let j = 1; j <= endpoints; j++) sh(['-n', backendNs, 'addr', 'add', `10.250.${sub}.${j}/32`, 'dev', `${veth}b`]);
    sh(['-n', backendNs, 'link', 'set', `${veth}b`, 'up']);
    sh(['-n', backendNs, 'link', 'set', 'lo', 'up']);
    execFileSync(ip, ['netns', 'exec', node, '/usr/sbin/sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=10000 65000']);
    writeFileSync(join(dir, 'server.cjs'), serverSource);
    writeFileSync(join(dir, 'client.cjs'), clientSource);
    const server = spawn(ip, ['netns', 'exec', backendNs, process.execPath, join(dir, 'server.cjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => server.stdout.once('data', () => resolve()));
    // Short enough that client ports do not wrap: a reused port can meet
    // the previous connection's TIME_WAIT and cost a SYN retransmit.
    await runIn(node, [join(dir, 'client.cjs'), firstVip, lastVip, '0.2']); // warm-up
    const r = JSON.parse(await runIn(node, [join(dir, 'client.cjs'), firstVip, lastVip, String(seconds)])) as { rate: [number, number]; cpuUs: [number, number]; slow: [number[], number[]]; connections: number; failed: number };
    server.kill('SIGKILL');
    if (r.failed > 0) throw new Error(`${r.failed} connections failed`);
    return { first: r.rate[0], last: r.rate[1], firstCpuUs: r.cpuUs[0], lastCpuUs: r.cpuUs[1], stalls: r.slow[0].length + r.slow[1].length, connections: r.connections };
  });
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces): run as root');
  for (const [tool, pkg] of [[nftTool, 'nftables'], [ip, 'iproute2'], ['/usr/bin/time', 'time']]) {
    try {
      accessSync(tool, constants.X_OK);
    } catch {
      throw new Error(`${tool} missing: apt-get install -y ${pkg}`);
    }
  }
  console.log(`nftables scale: ${a.services} Services × ${a.endpoints} endpoints (TCP ClusterIPs)`);
  const services = new Map<string, ServicePortState>();
  for (let i = 0; i < a.services; i++) {
    const s = service(i, Array.from({ length: a.endpoints }, (_, j) => endpoint(endpointIP(i, j, a))));
    services.set(s.key, s);
  }
  const dir = mkdtempSync(join(tmpdir(), 'kpx-nftbench-'));
  try {
    if (a.kproxy) await withNetns(async (ns) => {
      const k = await benchKproxy(a, ns, services);
      console.log('\nkproxy (shared maps, spread chains per endpoint count)');
      console.log(`  full sync            render ${fmt(k.fullRenderMs)} + nft ${fmt(k.fullNftMs)} = ${fmt(k.fullRenderMs + k.fullNftMs)} wall; CPU: kproxy ${fmt(k.fullRenderCpuMs)}, nft ${fmt(k.fullNftCpuMs)}  (${k.fullLines} lines, ${(k.fullBytes / 2 ** 20).toFixed(1)} MB)`);
      console.log(`  periodic full sync   ${fmt(k.periodicMs)} wall, nft CPU ${fmt(k.periodicNftCpuMs)} (table loaded: flush + refill in one transaction)`);
      console.log(`  endpoint change ×${a.changes}  p50 ${fmt(pct(k.changeMs, 50))}  p95 ${fmt(pct(k.changeMs, 95))} wall; CPU p50 ${fmt(pct(k.changeCpuMs, 50))}  (render + nft; batch ${k.changeLines} lines, ${k.changeBytes} bytes)`);
      console.log(`  RSS                  ${k.rssMB.toFixed(0)} MB`);
      if (a.datapath) {
        const d = await benchDatapath(a, ns, dir);
        const diff = ((d.last - d.first) / d.first) * 100;
        console.log(`  datapath             first Service ${d.first.toFixed(0)} conn/s, last Service ${d.last.toFixed(0)} conn/s (${diff >= 0 ? '+' : ''}${diff.toFixed(1)}%; ${d.connections} TCP connections, interleaved, rate from the median 50-connection batch)`);
      }
    });
    if (a.peer) {
      await withNetns(async (ns) => {
        const p = await benchPeer(a, ns);
        console.log('\npeer: kube-proxy nftables layout (chain per Service and per endpoint)');
        console.log(`  full load            ${fmt(p.fullMs)} (${p.lines} lines${p.fullMs === undefined ? `, stopped after ${a.peerTimeoutS} s` : ''})`);
        if (p.fullMs !== undefined) console.log(`  endpoint change      ${fmt(p.changeMs)}`);
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
