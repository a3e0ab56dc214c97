// Scale benchmark of the iptables mode against a kube-proxy-shaped peer.
//
//   node bench/iptables-scale.ts --services 1000,5000,10000 --endpoints 10 --variant nft|legacy|both [--quick] [--peer-timeout 600] [--semi-space MB|default]
//
// For each variant and size, in a fresh network namespace: the first full
// sync (TypeScript render time vs kernel tool time, batch lines, RSS), then
// 20 single-endpoint changes (partial sync: render + restore, p50/p95) and
// 5 Service add/remove changes. The peer is the batch kube-proxy v1.28
// writes (a KUBE-SVC chain plus one KUBE-SEP chain per endpoint), loaded by
// the same iptables-restore in its own fresh namespace, plus a 1-rule
// --noflush change on that table. Needs root, iptables, ipset, iproute2.
// The measuring process runs with the V8 flags the kproxy command gives
// Node.js (read from bin/kproxy.js's first line), so RSS is what an operator
// gets; --semi-space MB overrides the semi-space size, --semi-space default
// measures with Node's defaults (RSS at 10,000 Services depends more on V8's
// young generation than on what kproxy keeps).
import { spawn } from 'node:child_process';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { flagValue } from './args.ts';
import { childrenCpu, endpoint, ipv4, pct, service as benchService, withNetns } from './fixtures.ts';
import { netnsExec, toolPath } from '../lib/exec.ts';
import { sepChain, svcChain } from '../modes/iptables/names.ts';
import { silentLogger } from '../lib/log.ts';
import { kproxyNodeFlags } from '../test/helpers/kproxy-process.ts';
import { fullChanges, type Endpoint, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { syncBackend } from '../modes/sync.ts';

interface Args { sizes: number[]; endpoints: number; variants: ('nft' | 'legacy')[]; peerTimeoutS: number; changes: number; nodeFlags: string[] }

function parseArgs(argv: string[]): Args {
  const get = (flag: string): string | undefined => flagValue(argv, flag);
  const quick = argv.includes('--quick');
  const sizes = (get('--services') ?? (quick ? '200,1000' : '1000,5000')).split(',').map(Number);
  const endpoints = Number(get('--endpoints') ?? 10);
  const v = get('--variant') ?? 'both';
  if (!['nft', 'legacy', 'both'].includes(v)) throw new Error(`--variant must be nft, legacy or both (got ${v})`);
  if (sizes.some((n) => !Number.isInteger(n) || n <= 0) || !(endpoints > 0)) throw new Error('--services and --endpoints take positive integers');
  return {
    sizes, endpoints,
    variants: v === 'both' ? ['nft', 'legacy'] : [v as 'nft' | 'legacy'],
    peerTimeoutS: Number(get('--peer-timeout') ?? 900),
    changes: 20,
    nodeFlags: nodeFlags(get('--semi-space')),
  };
}

/** The Node.js flags the kproxy command runs with (its `#!/usr/bin/env -S node ...` line). */

function nodeFlags(semiSpace: string | undefined): string[] {
  const own = kproxyNodeFlags().filter((f) => !f.startsWith('--max-semi-space-size='));
  if (semiSpace === 'default') return own;
  if (semiSpace === undefined) return kproxyNodeFlags();
  if (!(Number(semiSpace) > 0)) throw new Error(`--semi-space takes MB or "default" (got ${semiSpace})`);
  return [...own, `--max-semi-space-size=${semiSpace}`];
}

const clusterIP = (i: number): string => ipv4(((172 << 24) | (16 << 16)) + i + 1);
const endpointIP = (i: number, j: number, e: number): string => ipv4((10 << 24) + i * (e + 1) + j + 1);
const service = (i: number, eps: Endpoint[]): ServicePortState => benchService(i, eps, clusterIP(i));

function state(services: Map<string, ServicePortState>): NodeState {
  return { nodeName: 'bench', nodeIPs: ['192.168.0.2'], services };
}

const childrenCpuMs = (): number => {
  const c = childrenCpu();
  return c.user + c.system;
};

function ownCpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

/** Runs a tool in a namespace with stdin, returning wall-clock ms, or undefined after the timeout. */
function timed(ns: string, tool: string, args: string[], input: string, timeoutS: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(toolPath('ip'), ['netns', 'exec', ns, toolPath(tool), ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.stdin.on('error', () => { /* the tool was stopped (timeout) or failed: reported on close */ });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve(undefined);
      else if (code === 0) resolve(performance.now() - t0);
      else reject(new Error(`${tool} exit ${code}: ${err.slice(0, 500)}`));
    });
    child.stdin.end(input);
  });
}

/** The nat batch kube-proxy v1.28 writes for these Services (per-endpoint chains). */
function kubeProxyBatch(n: number, e: number): { text: string; lines: number; firstSvc: string } {
  const L: string[] = ['*filter', ':KUBE-SERVICES - [0:0]', ':KUBE-EXTERNAL-SERVICES - [0:0]', ':KUBE-FORWARD - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-PROXY-FIREWALL - [0:0]',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    'COMMIT', '*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules: string[] = [
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
  ];
  for (let i = 0; i < n; i++) {
    const name = `bench/svc${i}:http`;
    const svc = svcChain(name, 'TCP');
    L.push(`:${svc} - [0:0]`);
    rules.push(`-A KUBE-SERVICES -m comment --comment "${name} cluster IP" -m tcp -p tcp -d ${clusterIP(i)} --dport 80 -j ${svc}`);
    rules.push(`-A ${svc} -m comment --comment "${name} cluster IP" -m tcp -p tcp -d ${clusterIP(i)} --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`);
    for (let j = 0; j < e; j++) {
      const ip = endpointIP(i, j, e);
      const sep = sepChain(name, 'TCP', ip, 8080);
      L.push(`:${sep} - [0:0]`);
      const stat = j < e - 1 ? ` -m statistic --mode random --probability ${(1 / (e - j)).toFixed(10)}` : '';
      rules.push(`-A ${svc} -m comment --comment "${name} -> ${ip}:8080"${stat} -j ${sep}`);
      rules.push(`-A ${sep} -m comment --comment ${name} -s ${ip} -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -m comment --comment ${name} -m tcp -p tcp -j DNAT --to-destination ${ip}:8080`);
    }
  }
  rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  // The jumps from built-in chains kube-proxy keeps: without them the
  // kernel would not re-validate the chain graph on each later change.
  rules.push('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
  rules.push('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
  rules.push('-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING');
  const text = `${[...L, ...rules, 'COMMIT'].join('\n')}\n`;
  return { text, lines: L.length + rules.length + 1, firstSvc: svcChain('bench/svc0:http', 'TCP') };
}

interface Row {
  variant: string; services: number; lines: number; renderMs: number; restoreMs: number; fullWallMs: number; rssMB: number;
  ownCpuMs: number; toolsCpuMs: number; peerCpuMs?: number; changeCpuP50: number;
  changeP50: number; changeP95: number; svcChangeP50: number; peerLines: number; peerMs?: number; peerChangeMs?: number;
}

async function runOurs(variant: 'nft' | 'legacy', n: number, e: number, changes: number): Promise<Omit<Row, 'peerLines'>> {
  process.env.KPROXY_IPTABLES_VARIANT = variant;
  return withNetns(async (ns) => {
    const b = new IptablesBackend({ families: [4], clusterCIDRs: ['10.0.0.0/8'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: netnsExec(ns) }, silentLogger());
    const services = new Map<string, ServicePortState>();
    for (let i = 0; i < n; i++) {
      const s = service(i, Array.from({ length: e }, (_, j) => endpoint(endpointIP(i, j, e))));
      services.set(s.key, s);
    }
    const st = state(services);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const kids0 = childrenCpuMs();
    const r = await syncBackend(b, st, fullChanges(st));
    const fullWallMs = performance.now() - t0;
    const ownCpu = ownCpuMs(cpu0);
    const toolsCpuMs = childrenCpuMs() - kids0;
    if (!r.ok) throw r.error;
    const rssMB = process.memoryUsage().rss / 2 ** 20; // state + record + the batch just sent
    const lat: number[] = [];
    const cpu: number[] = [];
    for (let c = 0; c < changes; c++) {
      const i = Math.floor((c + 0.5) * (n / changes));
      const old = services.get(service(i, []).key)!;
      const eps = [...old.clusterEndpoints];
      eps[c % e] = endpoint(ipv4((11 << 24) + c * 7 + i));
      const s = service(i, eps);
      services.set(s.key, s);
      const c0 = performance.now();
      const own0 = process.cpuUsage();
      const kids0 = childrenCpuMs();
      const rr = await syncBackend(b, state(services), { full: false, services: new Set([s.key]), staleUdpEndpoints: [], staleUdpServiceIPs: [] });
      lat.push(performance.now() - c0);
      cpu.push(ownCpuMs(own0) + childrenCpuMs() - kids0);
      if (!rr.ok || rr.full) throw rr.error ?? new Error('change became a full sync');
    }
    // Service removals and additions (they touch KUBE-SERVICES by -D / -I).
    const svcLat: number[] = [];
    for (let c = 0; c < 5; c++) {
      const i = Math.floor((c + 0.3) * (n / 5));
      const key = service(i, []).key;
      const old = services.get(key)!;
      services.delete(key);
      let c0 = performance.now();
      let rr = await syncBackend(b, state(services), { full: false, services: new Set([key]), staleUdpEndpoints: [], staleUdpServiceIPs: [] });
      svcLat.push(performance.now() - c0);
      services.set(key, old);
      c0 = performance.now();
      rr = await syncBackend(b, state(services), { full: false, services: new Set([key]), staleUdpEndpoints: [], staleUdpServiceIPs: [] });
      svcLat.push(performance.now() - c0);
      if (!rr.ok) throw rr.error;
    }
    return {
      variant, services: n, lines: r.size, renderMs: r.renderMs, restoreMs: r.applyMs, fullWallMs, rssMB, ownCpuMs: ownCpu, toolsCpuMs,
      changeP50: pct(lat, 50), changeP95: pct(lat, 95), svcChangeP50: pct(svcLat, 50), changeCpuP50: pct(cpu, 50),
    };
  });
}

async function runPeer(variant: 'nft' | 'legacy', n: number, e: number, timeoutS: number): Promise<{ lines: number; ms?: number; changeMs?: number; cpuMs?: number }> {
  const batch = kubeProxyBatch(n, e);
  return withNetns(async (ns) => {
    const kids0 = childrenCpuMs();
    const ms = await timed(ns, `iptables-${variant}-restore`, ['--noflush', '-w'], batch.text, timeoutS);
    const cpuMs = childrenCpuMs() - kids0;
    if (ms === undefined) return { lines: batch.lines, cpuMs };
    const one: number[] = [];
    for (let k = 0; k < 5; k++) {
      const change = `*nat\n-A ${batch.firstSvc} -m comment --comment "bench change ${k}" -p tcp -m tcp -j DNAT --to-destination 11.0.0.${k + 1}:8080\nCOMMIT\n`;
      one.push((await timed(ns, `iptables-${variant}-restore`, ['--noflush', '-w'], change, 120))!);
    }
    return { lines: batch.lines, ms, changeMs: pct(one, 50), cpuMs };
  });
}

const f = (x: number | undefined, d = 0): string => (x === undefined ? '–' : x.toFixed(d));

/** One (variant, size) measurement, in its own process so RSS is this size's alone. */
async function one(argv: string[]): Promise<void> {
  const [variant, n, e, changes, timeoutS] = argv;
  const v = variant as 'nft' | 'legacy';
  const ours = await runOurs(v, Number(n), Number(e), Number(changes));
  process.stderr.write(`kproxy ${v} ${n}: ${JSON.stringify(ours)}\n`); // kept even if the peer run fails
  const peer = await runPeer(v, Number(n), Number(e), Number(timeoutS));
  const row: Row = { ...ours, peerLines: peer.lines, peerMs: peer.ms, peerChangeMs: peer.changeMs, peerCpuMs: peer.cpuMs };
  process.stdout.write(`${JSON.stringify(row)}\n`);
}

function child(args: string[], nodeFlags: string[]): Promise<Row> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [...nodeFlags, process.argv[1], '--one', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as Row) : reject(new Error(`measurement ${args.join(' ')} failed (exit ${code})`))));
  });
}

async function main(): Promise<void> {
  if (process.argv[2] === '--one') return one(process.argv.slice(3));
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the benchmark creates network namespaces: run it as root');
  const rows: Row[] = [];
  for (const variant of args.variants) {
    for (const n of args.sizes) {
      try {
        const row = await child([variant, String(n), String(args.endpoints), String(args.changes), String(args.peerTimeoutS)], args.nodeFlags);
        rows.push(row);
        console.error(JSON.stringify(row));
      } catch (e) {
        console.error(String(e)); // go on with the other sizes
      }
    }
  }
  console.log(`\niptables mode, ${args.endpoints} endpoints per Service. Wall times in ms (noisy on a shared machine); CPU = user+system ms`);
  console.log('(kproxy CPU = this process: render and plumbing; tools CPU = iptables-restore, ipset, listing). Peer = kube-proxy v1.28-shaped batch, same tool.');
  const flagsNote = args.nodeFlags.join(' ') === kproxyNodeFlags().join(' ') ? 'as the kproxy command runs' : 'not those of the kproxy command';
  console.log(`kproxy side measured under node ${args.nodeFlags.join(' ') || '(no flags: V8 defaults)'} (${flagsNote})\n`);
  const head = ['variant', 'Services', 'batch lines', 'render', 'kernel tools', 'full sync wall', 'kproxy CPU', 'tools CPU', 'RSS MB',
    'change p50', 'change p95', 'change CPU p50', 'svc add/del p50', 'peer lines', 'peer restore wall', 'peer restore CPU', 'peer 1-rule', 'speed-up wall', 'speed-up CPU'];
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const r of rows) {
    const stopped = r.peerMs === undefined;
    const ratio = (peer: number | undefined, ours: number): string => (stopped ? `> ${f((peer ?? 0) / ours, 1)}×` : `${f((peer ?? 0) / ours, 1)}×`);
    console.log(`| ${[r.variant, r.services, r.lines, f(r.renderMs), f(r.restoreMs), f(r.fullWallMs), f(r.ownCpuMs), f(r.toolsCpuMs), f(r.rssMB),
      f(r.changeP50, 1), f(r.changeP95, 1), f(r.changeCpuP50, 1), f(r.svcChangeP50, 1), r.peerLines,
      stopped ? `> ${args.peerTimeoutS * 1000} (stopped)` : f(r.peerMs), f(r.peerCpuMs), f(r.peerChangeMs, 1),
      ratio(stopped ? args.peerTimeoutS * 1000 : r.peerMs, r.fullWallMs), ratio(r.peerCpuMs, r.ownCpuMs + r.toolsCpuMs)].join(' | ')} |`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
