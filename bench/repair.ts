// What finding and repairing a change someone else made to kproxy's rules
// costs at scale, side by side with a full sync (the only repair there was
// before: the hourly full resync, or a deleted canary).
//
//   node bench/repair.ts [--services 10000] [--endpoints 10] [--modes nftables,iptables-nft,iptables-legacy] [--quick]
//
// For each mode, in a fresh network namespace, the backend alone (no API
// server): a full sync without any watch (the peer: a full sync is also
// what a broad repair costs); the nf_tables event watch started on the
// loaded table (time to ready, the nft monitor's RSS and CPU); a periodic
// full sync with the watch running (what the events of kproxy's own large
// transaction cost); the periodic check alone; then each tampering case,
// made by another process: time until the backend knew (event, or the
// periodic check on iptables-legacy), and the repair sync (render, apply,
// batch lines). Needs root, nftables, iptables, ipset, iproute2.
// KPROXY_BENCH_LOG=1 prints the backends' logs (KPROXY_LOG_LEVEL=debug for
// the monitor's accounting of dropped events).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { Backend, DriftReport } from '../modes/backend.ts';
import { modeOf } from '../modes/registry.ts';
import { queuedBytes } from '../modes/nft-monitor.ts';
import { netnsExec, toolPath } from '../lib/exec.ts';
import { logger, silentLogger } from '../lib/log.ts';
import { fullChanges, type Changes, type NodeState } from '../proxy/model.ts';
import { syncBackend } from '../modes/sync.ts';
import { flagValue } from './args.ts';
import { endpoint, ipv4, service, withNetns } from './fixtures.ts';
import { nodeState } from '../test/helpers/state.ts';

const run = promisify(execFile);
type Kind = 'nftables' | 'iptables-nft' | 'iptables-legacy';

interface Args { services: number; endpoints: number; kinds: Kind[]; settleMs: number }

function parseArgs(argv: string[]): Args {
  const quick = argv.includes('--quick');
  const services = Number(flagValue(argv, '--services') ?? (quick ? 500 : 10000));
  const endpoints = Number(flagValue(argv, '--endpoints') ?? 10);
  const kinds = (flagValue(argv, '--modes') ?? 'nftables,iptables-nft,iptables-legacy').split(',') as Kind[];
  if (!Number.isInteger(services) || services < 10 || !Number.isInteger(endpoints) || endpoints < 1) throw new Error('--services (≥ 10) and --endpoints take integers');
  for (const k of kinds) if (!['nftables', 'iptables-nft', 'iptables-legacy'].includes(k)) throw new Error(`unknown mode ${k}`);
  // Time left for nft monitor to read kproxy's own events before the next step (longer at scale).
  return { services, endpoints, kinds, settleMs: Math.max(300, Math.min(3000, services / 3)) };
}

const vip = (i: number): string => ipv4(((10 << 24) | (96 << 16)) + i + 1);
const epIP = (i: number, j: number, e: number): string => ipv4(((10 << 24) | (128 << 16)) + i * e + j);

function state(a: Args): NodeState {
  return nodeState(Array.from({ length: a.services }, (_, i) => service(i, Array.from({ length: a.endpoints }, (_, j) => endpoint(epIP(i, j, a.endpoints))), vip(i))));
}

const none: Changes = { full: false, services: new Set(), staleUdpEndpoints: [], staleUdpServiceIPs: [] };
const fmt = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

/** Waits until nft monitor has read every event kproxy's own syncs made (its socket empty, its CPU idle). */
async function drained(ns: string, minMs: number): Promise<void> {
  await new Promise((r) => setTimeout(r, minMs));
  for (let i = 0; i < 600; i++) {
    const a = await monitorStats(ns);
    if (!a) return;
    await new Promise((r) => setTimeout(r, 200));
    const b = await monitorStats(ns);
    if (!b || (b.cpuMs === a.cpuMs && (queuedBytes(b.pid) ?? 0) === 0)) return;
  }
}

/** RSS (MB), CPU (ms) and pid of the `nft monitor` process in `ns`. */
async function monitorStats(ns: string): Promise<{ rssMB: number; cpuMs: number; pid: number } | undefined> {
  const { stdout } = await run(toolPath('ip'), ['netns', 'pids', ns]);
  for (const pid of stdout.split('\n').filter(Boolean)) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('monitor')) continue;
      const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
      return { rssMB: rss, cpuMs: (Number(x[11]) + Number(x[12])) * 10, pid: Number(pid) };
    } catch {
      // gone
    }
  }
  return undefined;
}

interface TamperCase {
  readonly name: string;
  readonly argv: (chain: string) => string[];
  /** Made right after a full sync of kproxy's own, before nft monitor has read its events. */
  readonly afterFullSync?: boolean;
}

function cases(kind: Kind, a: Args): TamperCase[] {
  const mid = Math.floor(a.services / 2);
  if (kind === 'nftables') {
    return [
      { name: 'flush the spread chain every Service uses', argv: () => ['nft', 'flush', 'chain', 'ip', 'kproxy', `cluster-${a.endpoints}`] },
      { name: 'delete one service-ips element', argv: () => ['nft', 'delete', 'element', 'ip', 'kproxy', 'service-ips', `{ ${vip(mid)} . tcp . 80 }`] },
      { name: 'delete one endpoint map element', argv: () => ['nft', 'delete', 'element', 'ip', 'kproxy', 'endpoints-tcp', `{ ${vip(mid)} . 80 . 1 }`] },
      { name: 'flush that chain right after a full sync of kproxy\'s', argv: () => ['nft', 'flush', 'chain', 'ip', 'kproxy', `cluster-${a.endpoints}`], afterFullSync: true },
      { name: 'delete the table (rebuilt by a full sync)', argv: () => ['nft', 'delete', 'table', 'ip', 'kproxy'] },
    ];
  }
  const ipt = kind === 'iptables-nft' ? 'iptables-nft' : 'iptables-legacy';
  return [
    { name: 'flush one KUBE-SVC chain', argv: (chain) => [ipt, '-w', '-t', 'nat', '-F', chain] },
    { name: 'delete the jump PREROUTING → KUBE-SERVICES', argv: () => [ipt, '-w', '-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'] },
    { name: 'iptables -t nat -F (a full sync)', argv: () => [ipt, '-w', '-t', 'nat', '-F'] },
  ];
}

async function benchKind(kind: Kind, a: Args, s: NodeState): Promise<void> {
  if (kind !== 'nftables') process.env.KPROXY_IPTABLES_VARIANT = kind.slice('iptables-'.length);
  await withNetns(async (ns) => {
    const exec = netnsExec(ns);
    const opts = { families: [4] as const, clusterCIDRs: ['10.0.0.0/8'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec };
    const log = process.env.KPROXY_BENCH_LOG ? logger() : silentLogger();
    const make = (): Backend => modeOf(kind === 'nftables' ? 'nftables' : 'iptables').create(opts, log);
    console.log(`\n## ${kind}, ${a.services} Services × ${a.endpoints} endpoints`);
    const rows: [string, string][] = [];

    const cold = make();
    let t0 = performance.now();
    const first = await syncBackend(cold, s, fullChanges(s));
    if (!first.ok) throw first.error;
    const peerFull = await syncBackend(cold, s, fullChanges(s));
    rows.push(['peer: a full sync on the loaded table, no watch', `${fmt(peerFull.renderMs + peerFull.applyMs)} (first load ${fmt(performance.now() - t0 - peerFull.renderMs - peerFull.applyMs)})`]);

    // The backend under test adopts the table, watching.
    const b = make();
    let last: { at: number; report: DriftReport } | undefined;
    let resolveFound: (() => void) | undefined;
    t0 = performance.now();
    const watch = b.watchDrift?.((report) => { last = { at: performance.now(), report }; resolveFound?.(); });
    await watch?.ready;
    const m = await monitorStats(ns);
    if (m) rows.push(['nf_tables watch ready on the loaded table', `${fmt(performance.now() - t0)}; nft monitor RSS ${m.rssMB.toFixed(0)} MB, CPU ${m.cpuMs} ms`]);
    else rows.push(['nf_tables watch', 'none (iptables-legacy makes no nf_tables events)']);
    const adopt = await syncBackend(b, s, fullChanges(s));
    if (!adopt.ok) throw adopt.error;
    const before = await monitorStats(ns);
    await new Promise((r) => setTimeout(r, a.settleMs));
    const withWatch = await syncBackend(b, s, fullChanges(s));
    await drained(ns, a.settleMs);
    const after = await monitorStats(ns);
    rows.push([m ? 'a full sync with the watch running' : 'a full sync', `${fmt(withWatch.renderMs + withWatch.applyMs)}${before && after ? `; nft monitor CPU +${after.cpuMs - before.cpuMs} ms, RSS ${after.rssMB.toFixed(0)} MB` : ''}`]);
    if (last) rows.push(['findings reported for kproxy\'s own syncs', JSON.stringify(last.report)]);
    last = undefined;

    if (b.checkDrift) {
      t0 = performance.now();
      const r = await b.checkDrift();
      rows.push(['the periodic check alone', `${fmt(performance.now() - t0)} (found ${r.damage.length}${r.full ? ', full' : ''})`]);
    }

    let chain = '';
    if (kind !== 'nftables') {
      const { stdout } = await exec(`${kind}-save`, ['-t', 'nat']).catch(() => ({ stdout: '' }));
      chain = /^-A (KUBE-SVC-\S+) .*bench\/svc\d+:http -> /m.exec(stdout)?.[1] ?? '';
    }
    for (const c of cases(kind, a)) {
      await drained(ns, a.settleMs);
      if (c.afterFullSync) await syncBackend(b, s, fullChanges(s));
      last = undefined;
      const found = new Promise<void>((r) => { resolveFound = r; });
      t0 = performance.now();
      await run(toolPath('ip'), ['netns', 'exec', ns, ...c.argv(chain)]);
      let detectedMs: number;
      if (kind === 'iptables-legacy') {
        // No events: what the periodic check costs is the detection (it runs every sync period).
        const c0 = performance.now();
        await b.checkDrift!();
        detectedMs = performance.now() - c0;
      } else {
        await Promise.race([found, new Promise((r) => setTimeout(r, Number(process.env.KPROXY_BENCH_WAIT_MS ?? 30_000)))]);
        if (!last) { rows.push([c.name, 'NOT FOUND within 30 s']); continue; }
        detectedMs = (last as { at: number }).at - t0;
      }
      const r = await syncBackend(b, s, none);
      const why = last ? (last as { report: DriftReport }).report.full : undefined;
      rows.push([c.name, `${kind === 'iptables-legacy' ? 'check' : 'found'} ${fmt(detectedMs)}${why ? ` (full: ${why})` : ''}; repair ${r.full ? 'FULL ' : ''}sync ${fmt(r.renderMs + r.applyMs)} (render ${fmt(r.renderMs)}, ${r.size} lines), ok=${r.ok}, repaired ${r.repairs?.map((d) => d.what).join(',')}`]);
    }
    await watch?.stop();
    const w = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
  });
}

const a = parseArgs(process.argv.slice(2));
const s = state(a);
for (const k of a.kinds) await benchKind(k, a, s);
