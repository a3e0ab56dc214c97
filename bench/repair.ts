// What finding and repairing a change someone else made to kproxy's rules
// costs at scale, side by side with a full sync (the only repair there was
// before: the hourly full resync, or a deleted canary), and what the
// nf_tables event watch itself costs with each source: kproxy's listener
// (modes/nft-events.ts) against `nft monitor` (the fallback), in one run.
//
//   node bench/repair.ts [--services 10000] [--endpoints 10] [--modes nftables,iptables-nft,iptables-legacy]
//                        [--sources listener,nft-monitor] [--quick]
//
// For each mode, in a fresh network namespace, the backend alone (no API
// server): a full sync without any watch (the peer: a full sync is also
// what a broad repair costs); then, for each event source, the watch
// started on the loaded table (time to ready, the watch process's memory
// and CPU), a full sync with the watch running (what the events of
// kproxy's own large transaction cost, and whether any were lost), the
// periodic check alone, and each tampering case made by another process:
// time until the backend knew (event, or the periodic check on
// iptables-legacy, which has no events), and the repair sync (render,
// apply, batch lines). Needs root, nftables, iptables, ipset, iproute2.
// KPROXY_BENCH_LOG=1 prints the backends' logs.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { pino } from 'pino';
import type { Backend, DriftReport } from '../modes/backend.ts';
import { modeOf } from '../modes/registry.ts';
import { queuedBytes } from '../modes/nft-monitor.ts';
import { netnsExec, toolPath } from '../lib/exec.ts';
import { logger, type Logger } from '../lib/log.ts';
import { fullChanges, type Changes, type NodeState } from '../proxy/model.ts';
import { syncBackend } from '../modes/sync.ts';
import { flagValue } from './args.ts';
import { endpoint, ipv4, service, withNetns } from './fixtures.ts';
import { nodeState } from '../test/helpers/state.ts';

const run = promisify(execFile);
type Kind = 'nftables' | 'iptables-nft' | 'iptables-legacy';
type Source = 'listener' | 'nft-monitor';

interface Args { services: number; endpoints: number; kinds: Kind[]; sources: Source[]; settleMs: number }

function parseArgs(argv: string[]): Args {
  const quick = argv.includes('--quick');
  const services = Number(flagValue(argv, '--services') ?? (quick ? 500 : 10000));
  const endpoints = Number(flagValue(argv, '--endpoints') ?? 10);
  const kinds = (flagValue(argv, '--modes') ?? 'nftables,iptables-nft,iptables-legacy').split(',') as Kind[];
  const sources = (flagValue(argv, '--sources') ?? 'listener,nft-monitor').split(',') as Source[];
  if (!Number.isInteger(services) || services < 60 || !Number.isInteger(endpoints) || endpoints < 1) throw new Error('--services (≥ 60) and --endpoints take integers');
  for (const k of kinds) if (!['nftables', 'iptables-nft', 'iptables-legacy'].includes(k)) throw new Error(`unknown mode ${k}`);
  for (const s of sources) if (!['listener', 'nft-monitor'].includes(s)) throw new Error(`unknown source ${s}`);
  // Time left for the watch to read kproxy's own events before the next step (longer at scale).
  return { services, endpoints, kinds, sources, settleMs: Math.max(300, Math.min(3000, services / 3)) };
}

const vip = (i: number): string => ipv4(((10 << 24) | (96 << 16)) + i + 1);
const epIP = (i: number, j: number, e: number): string => ipv4(((10 << 24) | (128 << 16)) + i * e + j);

function state(a: Args): NodeState {
  return nodeState(Array.from({ length: a.services }, (_, i) => service(i, Array.from({ length: a.endpoints }, (_, j) => endpoint(epIP(i, j, a.endpoints))), vip(i))));
}

const none: Changes = { full: false, services: new Set(), staleUdpEndpoints: [], staleUdpServiceIPs: [] };
const fmt = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

interface WatchStats { rssMB: number; anonMB: number; pssMB: number; cpuMs: number; pid: number }

/** Memory and CPU of the watch process in `ns` (kproxy's listener, or `nft monitor`). */
async function watchStats(ns: string): Promise<WatchStats | undefined> {
  const { stdout } = await run(toolPath('ip'), ['netns', 'pids', ns]);
  for (const pid of stdout.split('\n').filter(Boolean)) {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      const isMonitor = comm === 'nft' && readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('monitor');
      if (comm !== 'kproxy-nfevents' && !isMonitor) continue;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (field: string, text: string): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1] ?? 0);
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
      return {
        rssMB: kb('VmRSS', status) / 1024, anonMB: kb('RssAnon', status) / 1024, pssMB: kb('Pss', readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')) / 1024,
        cpuMs: (Number(x[11]) + Number(x[12])) * 10, pid: Number(pid),
      };
    } catch {
      // gone
    }
  }
  return undefined;
}

const mem = (m: WatchStats): string => `RSS ${m.rssMB.toFixed(0)} MB (anonymous ${m.anonMB.toFixed(0)} MB, PSS ${m.pssMB.toFixed(0)} MB)`;

/** Waits until the watch has read every event kproxy's own syncs made (its socket empty, its CPU idle). */
async function drained(ns: string, minMs: number): Promise<void> {
  await new Promise((r) => setTimeout(r, minMs));
  for (let i = 0; i < 600; i++) {
    const a = await watchStats(ns);
    if (!a) return;
    await new Promise((r) => setTimeout(r, 200));
    const b = await watchStats(ns);
    if (!b || (b.cpuMs === a.cpuMs && (queuedBytes(b.pid) ?? 0) === 0)) return;
  }
}

interface TamperCase {
  readonly name: string;
  readonly argv: (chain: string) => string[];
  /** Made right after a full sync of kproxy's own, before the watch has read its events. */
  readonly afterFullSync?: boolean;
}

function cases(kind: Kind, a: Args): TamperCase[] {
  const mid = Math.floor(a.services / 2);
  if (kind === 'nftables') {
    // 500 elements of one map in one transaction: more than the listener lists keys for (the map refilled whole).
    const many = Array.from({ length: 50 }, (_, i) => Array.from({ length: Math.min(10, a.endpoints) }, (_, j) => `${vip(i)} . 80 . ${j}`)).flat().join(', ');
    return [
      { name: 'flush the spread chain every Service uses', argv: () => ['nft', 'flush', 'chain', 'ip', 'kproxy', `cluster-${a.endpoints}`] },
      { name: 'delete one service-ips element', argv: () => ['nft', 'delete', 'element', 'ip', 'kproxy', 'service-ips', `{ ${vip(mid)} . tcp . 80 }`] },
      { name: 'delete one endpoint map element', argv: () => ['nft', 'delete', 'element', 'ip', 'kproxy', 'endpoints-tcp', `{ ${vip(mid)} . 80 . 1 }`] },
      { name: `delete ${Math.min(10, a.endpoints) * 50} endpoint map elements at once`, argv: () => ['nft', 'delete', 'element', 'ip', 'kproxy', 'endpoints-tcp', `{ ${many} }`] },
      { name: 'flush that chain right after a full sync of kproxy\'s', argv: () => ['nft', 'flush', 'chain', 'ip', 'kproxy', `cluster-${a.endpoints}`], afterFullSync: true },
      { name: 'delete the table (rebuilt by a full sync)', argv: () => ['nft', 'delete', 'table', 'ip', 'kproxy'] },
    ];
  }
  const ipt = kind === 'iptables-nft' ? 'iptables-nft' : 'iptables-legacy';
  return [
    { name: 'flush one KUBE-SVC chain', argv: (chain) => [ipt, '-w', '-t', 'nat', '-F', chain] },
    { name: 'delete the jump PREROUTING → KUBE-SERVICES', argv: () => [ipt, '-w', '-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'] },
    { name: 'iptables -t nat -F', argv: () => [ipt, '-w', '-t', 'nat', '-F'] },
  ];
}

/** A logger that keeps the messages (to tell whether events were lost), printing them too with KPROXY_BENCH_LOG=1. */
function capturingLogger(): { log: Logger; messages: string[] } {
  const messages: string[] = [];
  const print = process.env.KPROXY_BENCH_LOG ? logger() : undefined;
  const log = pino({ level: 'debug' }, {
    write(line: string) {
      try {
        messages.push(String((JSON.parse(line) as { msg?: string }).msg));
      } catch {
        // not JSON
      }
      if (print) process.stderr.write(line);
    },
  });
  return { log, messages };
}

const lostMsg = /events of kproxy's own large transaction were dropped/;

/** One pass: a backend watching with `source` (or none on iptables-legacy) adopts the loaded table; the watch's cost, then each case. */
async function pass(kind: Kind, source: Source | undefined, a: Args, s: NodeState, ns: string): Promise<Map<string, string>> {
  const exec = netnsExec(ns);
  const opts = { families: [4] as const, clusterCIDRs: ['10.0.0.0/8'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec };
  const { log, messages } = capturingLogger();
  const b: Backend = modeOf(kind === 'nftables' ? 'nftables' : 'iptables').create(opts, log);
  const rows = new Map<string, string>();
  let last: { at: number; report: DriftReport } | undefined;
  let resolveFound: (() => void) | undefined;

  // The source is chosen when the watch starts: the fallback is what a node without the addon runs.
  const before = process.env.KPROXY_NFT_EVENTS_ADDON;
  if (source === 'nft-monitor') process.env.KPROXY_NFT_EVENTS_ADDON = '/nonexistent/kproxy_nft_events.node';
  let t0 = performance.now();
  const watch = b.watchDrift?.((report) => { last = { at: performance.now(), report }; resolveFound?.(); });
  await watch?.ready;
  const readyMs = performance.now() - t0;
  if (before === undefined) delete process.env.KPROXY_NFT_EVENTS_ADDON;
  else process.env.KPROXY_NFT_EVENTS_ADDON = before;
  const m = await watchStats(ns);
  rows.set('watch ready on the loaded table', m ? `${fmt(readyMs)}; ${mem(m)}, CPU ${m.cpuMs} ms` : 'no watch (iptables-legacy makes no nf_tables events)');

  const adopt = await syncBackend(b, s, fullChanges(s));
  if (!adopt.ok) throw adopt.error;
  await drained(ns, a.settleMs);
  const w0 = await watchStats(ns);
  const lostBefore = messages.filter((x) => lostMsg.test(x)).length;
  const withWatch = await syncBackend(b, s, fullChanges(s));
  await drained(ns, a.settleMs);
  const w1 = await watchStats(ns);
  const lost = messages.filter((x) => lostMsg.test(x)).length - lostBefore;
  rows.set('a full sync with the watch running', `${fmt(withWatch.renderMs + withWatch.applyMs)}${w0 && w1 ? `; watch CPU +${w1.cpuMs - w0.cpuMs} ms, ${mem(w1)}; own events lost: ${lost ? 'yes' : 'no'}` : ''}`);
  rows.set('findings reported for kproxy\'s own syncs', last ? JSON.stringify(last.report) : 'none');
  last = undefined;

  if (b.checkDrift) {
    t0 = performance.now();
    const r = await b.checkDrift();
    rows.set('the periodic check alone', `${fmt(performance.now() - t0)} (found ${r.damage.length}${r.full ? ', full' : ''})`);
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
    const [tool, ...args] = c.argv(chain);
    await run(toolPath('ip'), ['netns', 'exec', ns, toolPath(tool), ...args], { maxBuffer: 1 << 24 });
    let detectedMs: number;
    if (kind === 'iptables-legacy') {
      // No events: what the periodic check costs is the detection (it runs every sync period).
      const c0 = performance.now();
      await b.checkDrift!();
      detectedMs = performance.now() - c0;
    } else {
      await Promise.race([found, new Promise((r) => setTimeout(r, Number(process.env.KPROXY_BENCH_WAIT_MS ?? 30_000)))]);
      if (!last) { rows.set(c.name, 'NOT FOUND within 30 s'); continue; }
      detectedMs = (last as { at: number }).at - t0;
    }
    const r = await syncBackend(b, s, none);
    const why = last ? (last as { report: DriftReport }).report.full : undefined;
    const what = [...new Set(r.repairs?.map((d) => d.what))].join(',');
    rows.set(c.name, `${kind === 'iptables-legacy' ? 'check' : 'found'} ${fmt(detectedMs)}; repair ${r.full ? 'FULL ' : ''}sync ${fmt(r.renderMs + r.applyMs)} (${r.size} lines${why ? `; full: ${why.slice(0, 60)}` : ''}), ok=${r.ok}, repaired ${r.repairs?.length} ${what}`);
  }
  await watch?.stop();
  return rows;
}

async function benchKind(kind: Kind, a: Args, s: NodeState): Promise<void> {
  if (kind !== 'nftables') process.env.KPROXY_IPTABLES_VARIANT = kind.slice('iptables-'.length);
  const sources: (Source | undefined)[] = kind === 'iptables-legacy' ? [undefined] : a.sources;
  console.log(`\n## ${kind}, ${a.services} Services × ${a.endpoints} endpoints`);
  const columns: Map<string, string>[] = [];
  let peer = '';
  for (const source of sources) {
    await withNetns(async (ns) => {
      if (!peer) {
        const cold = modeOf(kind === 'nftables' ? 'nftables' : 'iptables').create({ families: [4], clusterCIDRs: ['10.0.0.0/8'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: netnsExec(ns) }, capturingLogger().log);
        const t0 = performance.now();
        const first = await syncBackend(cold, s, fullChanges(s));
        if (!first.ok) throw first.error;
        const loadMs = performance.now() - t0;
        const again = await syncBackend(cold, s, fullChanges(s));
        peer = `${fmt(again.renderMs + again.applyMs)} (first load ${fmt(loadMs)})`;
      } else {
        // The same table, loaded without measuring.
        const loader = modeOf(kind === 'nftables' ? 'nftables' : 'iptables').create({ families: [4], clusterCIDRs: ['10.0.0.0/8'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: netnsExec(ns) }, capturingLogger().log);
        const first = await syncBackend(loader, s, fullChanges(s));
        if (!first.ok) throw first.error;
      }
      columns.push(await pass(kind, source, a, s, ns));
    });
  }
  const names = sources.map((x) => x ?? 'periodic check');
  const keys = ['peer: a full sync on the loaded table, no watch', ...new Set(columns.flatMap((c) => [...c.keys()]))];
  const w = Math.max(...keys.map((k) => k.length));
  for (const k of keys) {
    if (k.startsWith('peer:')) {
      console.log(`${k.padEnd(w)}  ${peer}`);
      continue;
    }
    columns.forEach((c, i) => console.log(`${(i === 0 ? k : '').padEnd(w)}  ${names.length > 1 ? `[${names[i]}] ` : ''}${c.get(k) ?? '–'}`));
  }
}

const a = parseArgs(process.argv.slice(2));
const s = state(a);
for (const k of a.kinds) await benchKind(k, a, s);
