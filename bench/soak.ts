// Soak: the real kproxy, as a node runs it, under a steady trickle of
// EndpointSlice changes for a long time. Memory must come back to where the
// first sync left it, every change must reach the kernel, and each
// incremental sync must cost in proportion to its change, not grow with time.
//
//   node bench/soak.ts [--services 10000] [--modes iptables,nftables,userspace] [--minutes 10]
//        [--churn-percent 1] [--endpoints 10] [--quick]
//
// For each mode: a fresh sandbox (test/helpers/netns.ts), the list/watch
// test API server holding N synthetic Services × E endpoints, and the real
// kproxy binary (bin/kproxy.js --kubeconfig ..., --iptables-min-sync-period
// 1s) in the node namespace, reaching the API server through a relay. Once
// /healthz says 200 the first sync is done and kproxy's RSS is read. Then,
// every second, `--churn-percent` of the EndpointSlices (the next ones in
// turn, so every slice changes again and again) get new endpoint addresses.
// Every tenth of the run a row is printed: kproxy's RSS and V8 heap, the
// incremental syncs of that window from kproxy's own "synced" log lines
// (count, service ports changed, batch lines, mean and slowest duration),
// its heap compactions (pause, CPU), and the CPU kproxy and its kernel
// tools used. At the end the churn stops, the last change is waited for,
// RSS is read again and `kproxy diff` (the desired rules against the
// kernel's) must be clean.
//
// Targets: RSS at the end within 25% of RSS after the first sync; diff
// clean; incremental syncs' batch size and duration flat over the run (last
// window's mean against the first's). --quick (CI) runs 300 Services for a few seconds:
// its figures only show that the benchmark works.
// Needs root, iproute2, iptables, nftables, ipset, conntrack.
import { readdirSync, readFileSync } from 'node:fs';
import { modes as registeredModes, type ProxyMode } from '../modes/registry.ts';
import { addresses, createSandbox, requireKernelPrerequisites, type Sandbox } from '../test/helpers/netns.ts';
import { httpGet } from '../test/helpers/traffic.ts';
import { metricsPort, metricValue, runKproxy, startKproxy, type KproxyProcess } from '../test/helpers/kproxy-process.ts';
import { TestApiServer, type KubeObject } from '../test/helpers/apiserver.ts';
import { kubeconfigInNamespace } from '../test/e2e/api-relay.ts';
import { nodeObject } from '../test/e2e/cluster.ts';
import { syntheticService, syntheticSlice } from '../test/fixtures/proxy/synthetic.ts';
import { flagValue } from './args.ts';

interface Args {
  services: number;
  modes: ProxyMode[];
  seconds: number;
  churnPercent: number;
  endpoints: number;
}

// The modes that need no kernel module of their own run on this host (IPVS runs in user-mode-linux: bench/ipvs-scale.ts).
const hostModes: readonly string[] = registeredModes.filter((m) => m.kernelModules.length === 0).map((m) => m.name);

function parseArgs(argv: string[]): Args {
  const get = (flag: string): string | undefined => flagValue(argv, flag);
  const quick = argv.includes('--quick');
  const services = Number(get('--services') ?? (quick ? 300 : 10_000));
  const modes = (get('--modes') ?? 'iptables,nftables').split(',');
  const seconds = get('--minutes') !== undefined ? Number(get('--minutes')) * 60 : quick ? 8 : 600;
  const churnPercent = Number(get('--churn-percent') ?? 1);
  const endpoints = Number(get('--endpoints') ?? 10);
  if (!Number.isInteger(services) || services < 1 || services > 60_000) throw new Error('--services takes an integer from 1 to 60000');
  if (modes.some((m) => !hostModes.includes(m))) throw new Error(`--modes takes some of ${hostModes.join(', ')} (got ${modes.join(',')})`);
  if (!(seconds >= 1)) throw new Error('--minutes must be positive');
  if (!(churnPercent > 0 && churnPercent <= 100)) throw new Error('--churn-percent takes a number above 0, at most 100');
  if (!Number.isInteger(endpoints) || endpoints < 1 || endpoints > 240) throw new Error('--endpoints takes an integer from 1 to 240');
  return { services, modes: modes as ProxyMode[], seconds: Math.round(seconds), churnPercent, endpoints };
}

// ---- kproxy's figures ----

interface Sample {
  readonly atS: number;
  /** Epoch ms when taken (log lines are split into windows by it). */
  readonly at: number;
  readonly rssMB: number;
  readonly heapUsedMB: number;
  readonly heapTotalMB: number;
  /** CPU seconds of kproxy itself and of its waited-for children (the kernel tools). */
  readonly cpuS: number;
  readonly childCpuS: number;
  readonly changesSent: number;
}

/**
 * The kproxy node process's RSS and CPU (`ip netns exec` execs node in
 * place, so the pid is node's), with the processes it keeps running (the
 * userspace mode's forwarding workers): their RSS is added to kproxy's and
 * their CPU to its children's.
 */
function procFigures(pid: number): { rssMB: number; cpuS: number; childCpuS: number } {
  const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  if (!cmd.includes('kproxy')) throw new Error(`pid ${pid} is not kproxy: ${cmd.replaceAll('\0', ' ')}`);
  const rssKiB = (p: number | string): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? NaN);
  const fields = (p: number | string): string[] => {
    const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  };
  const f = fields(pid);
  let rss = rssKiB(pid);
  if (Number.isNaN(rss)) throw new Error(`no VmRSS for pid ${pid}`);
  // utime, stime, cutime, cstime in clock ticks (100 per second here).
  let childTicks = Number(f[13]) + Number(f[14]);
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const c = fields(d);
      if (Number(c[1]) !== pid || !/worker\.ts/.test(readFileSync(`/proc/${d}/cmdline`, 'utf8'))) continue;
      rss += rssKiB(d);
      childTicks += Number(c[11]) + Number(c[12]);
    } catch {
      // gone meanwhile
    }
  }
  return { rssMB: rss / 1024, cpuS: (Number(f[11]) + Number(f[12])) / 100, childCpuS: childTicks / 100 };
}

async function metrics(sandbox: Sandbox): Promise<string> {
  const r = await httpGet(sandbox.node, `http://127.0.0.1:${metricsPort}/metrics`);
  if (r.status !== 200) throw new Error(`kproxy metrics answered ${r.status} ${r.error ?? ''}`);
  return r.body;
}

async function sample(sandbox: Sandbox, kproxy: KproxyProcess, started: number, changesSent: number): Promise<Sample> {
  const text = await metrics(sandbox);
  const v = (name: string): number => metricValue(text, name) ?? NaN;
  const at = Date.now();
  return {
    atS: (at - started) / 1000, at, ...procFigures(kproxy.pid), changesSent,
    heapUsedMB: v('nodejs_heap_size_used_bytes') / 1e6,
    heapTotalMB: v('nodejs_heap_size_total_bytes') / 1e6,
  };
}

/** kproxy's debug log lines that say what a sync and a compaction cost. */
interface LogLine {
  time: number;
  msg: string;
  component?: string;
  full?: boolean;
  changed?: number;
  /** Units of work the sync sent (batch lines, set elements: Plan.size). */
  size?: number;
  ms?: number;
  pauseMs?: number;
  cpuMs?: number;
}

function logLines(kproxy: KproxyProcess): LogLine[] {
  const out: LogLine[] = [];
  for (const line of kproxy.logs().split('\n')) {
    if (!line.startsWith('{') || !(line.includes('"msg":"synced"') || line.includes('"msg":"heap compacted"'))) continue;
    try { out.push(JSON.parse(line) as LogLine); } catch { /* a partial last line */ }
  }
  return out;
}

// ---- one run ----

interface Window {
  readonly fromS: number;
  readonly toS: number;
  readonly changes: number;
  readonly syncs: number;
  readonly fullSyncs: number;
  /** Per incremental sync: service ports changed, batch lines, duration. */
  readonly meanChanged: number;
  readonly meanLines: number;
  readonly meanMs: number;
  readonly maxMs: number;
  readonly compactions: number;
  readonly maxPauseMs: number;
  /** CPU time of one compaction, mean (less swayed by other work on the machine than the pause). */
  readonly compactionCpuMs: number;
  readonly cpuS: number;
  readonly childCpuS: number;
  readonly end: Sample;
}

interface Result {
  mode: ProxyMode;
  services: number;
  startToHealthyS: number;
  firstRssMB: number;
  firstHeapUsedMB: number;
  endRssMB: number;
  endHeapUsedMB: number;
  maxRssMB: number;
  changes: number;
  windows: Window[];
  diffClean: boolean;
  diffSummary: string;
  diffS: number;
  kproxyAlive: boolean;
}

const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

function windowOf(a: Sample, b: Sample, logs: readonly LogLine[]): Window {
  const inside = logs.filter((l) => l.time > a.at && l.time <= b.at);
  const syncs = inside.filter((l) => l.msg === 'synced' && l.component === 'runner');
  const partial = syncs.filter((l) => !l.full);
  if (partial.some((l) => typeof l.size !== 'number')) throw new Error(`kproxy's "synced" log line has no size: ${JSON.stringify(partial[0])}`);
  const compactions = inside.filter((l) => l.msg === 'heap compacted');
  return {
    fromS: a.atS, toS: b.atS, changes: b.changesSent - a.changesSent, syncs: partial.length, fullSyncs: syncs.length - partial.length,
    meanChanged: mean(partial.map((l) => l.changed ?? 0)), meanLines: mean(partial.map((l) => l.size!)),
    meanMs: mean(partial.map((l) => l.ms ?? 0)), maxMs: Math.max(...partial.map((l) => l.ms ?? 0)),
    compactions: compactions.length, maxPauseMs: Math.max(0, ...compactions.map((l) => l.pauseMs ?? 0)),
    compactionCpuMs: mean(compactions.map((l) => l.cpuMs ?? 0)),
    cpuS: b.cpuS - a.cpuS, childCpuS: b.childCpuS - a.childCpuS, end: b,
  };
}

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function soak(args: Args, mode: ProxyMode): Promise<Result> {
  const sandbox = await createSandbox({ pods: 1, prefix: 'kpsoak' });
  const cleanups: (() => Promise<unknown> | void)[] = [() => sandbox.destroy()];
  try {
    const api = await TestApiServer.start();
    cleanups.push(() => api.close());
    api.upsert(nodeObject({ name: 'node-a', ip: addresses.nodeIP }) as unknown as KubeObject);
    for (let i = 0; i < args.services; i++) {
      api.upsert(syntheticService(i) as unknown as KubeObject);
      api.upsert(syntheticSlice(i, args.endpoints) as unknown as KubeObject);
    }
    const config = await kubeconfigInNamespace(api, sandbox.node);
    cleanups.push(() => config.close());
    const kubeconfig = config.path;

    const t0 = Date.now();
    const kproxy = await startKproxy({ sandbox, mode, kubeconfig, extraArgs: ['--iptables-min-sync-period', '1s'], readyTimeoutMs: 3_600_000 });
    cleanups.push(() => kproxy.stop('SIGKILL'));
    const startToHealthyS = (Date.now() - t0) / 1000;
    let started = Date.now();
    const first = await sample(sandbox, kproxy, started, 0);
    const baseChanges = metricValue(await metrics(sandbox), 'kubeproxy_sync_proxy_rules_endpoint_changes_total') ?? 0;

    const perTick = Math.max(1, Math.round((args.services * args.churnPercent) / 100));
    const samples: Sample[] = [first];
    const windowS = Math.max(1, Math.round(args.seconds / 10));
    let next = 0;
    let changes = 0;
    let maxRss = first.rssMB;
    started = Date.now();
    for (let tick = 1; tick <= args.seconds; tick++) {
      for (let k = 0; k < perTick; k++) {
        const i = next++ % args.services;
        // Generation g shifts slice i's addresses by g: every change is a real one.
        api.upsert(syntheticSlice(i, args.endpoints, Math.floor((next - 1) / args.services) + 1) as unknown as KubeObject);
        changes++;
      }
      const wait = started + tick * 1000 - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (tick % windowS === 0 || tick === args.seconds) {
        const s = await sample(sandbox, kproxy, started, changes);
        samples.push(s);
        maxRss = Math.max(maxRss, s.rssMB);
        const w = windowOf(samples[samples.length - 2], s, logLines(kproxy));
        console.log(`#   ${s.atS.toFixed(0)} s: RSS ${s.rssMB.toFixed(0)} MB, heap used ${s.heapUsedMB.toFixed(0)} MB of ${s.heapTotalMB.toFixed(0)}, ${w.syncs} incremental syncs (mean ${w.meanMs.toFixed(0)} ms, ${w.meanLines.toFixed(0)} lines)${w.fullSyncs ? `, ${w.fullSyncs} full` : ''}, ${w.compactions} compactions`);
      }
    }

    // Every change has been seen once kproxy's change counter has counted it;
    // it is in the kernel once no change is pending and the sync that took
    // them (one min sync period later at most) has had time to finish.
    await waitUntil('kproxy to see every change', 120_000, async () =>
      (metricValue(await metrics(sandbox), 'kubeproxy_sync_proxy_rules_endpoint_changes_total') ?? 0) >= baseChanges + changes);
    const settled = async (): Promise<boolean> => metricValue(await metrics(sandbox), 'kubeproxy_sync_proxy_rules_endpoint_changes_pending') === 0;
    await waitUntil('the last change synced', 120_000, settled);
    await new Promise((r) => setTimeout(r, 5000));
    await waitUntil('the last change synced', 120_000, settled);
    const end = await sample(sandbox, kproxy, started, changes);
    const logs = logLines(kproxy);
    const kproxyAlive = await Promise.race([kproxy.exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 10))]);

    const d0 = Date.now();
    const diff = await runKproxy(sandbox, ['diff', '--proxy-mode', mode, '--kubeconfig', kubeconfig, '--hostname-override', 'node-a', '--cluster-cidr', addresses.clusterCIDR, '--log-level', 'warn']);
    const diffS = (Date.now() - d0) / 1000;
    const changed = diff.stdout.split('\n').filter((l) => /^[+-][^+-]/.test(l));
    const diffSummary = diff.code === 0 ? 'clean' : `exit ${diff.code}: ${changed.length} differing lines${changed.length ? `, e.g. ${changed.slice(0, 3).join(' | ')}` : ''} ${diff.stderr.slice(-500)}`;
    return {
      mode, services: args.services, startToHealthyS,
      firstRssMB: first.rssMB, firstHeapUsedMB: first.heapUsedMB, endRssMB: end.rssMB, endHeapUsedMB: end.heapUsedMB,
      maxRssMB: Math.max(maxRss, end.rssMB), changes,
      windows: samples.slice(1).map((s, k) => windowOf(samples[k], s, logs)),
      diffClean: diff.code === 0, diffSummary, diffS, kproxyAlive,
    };
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  }
}

// ---- report ----

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(r));
}

function report(args: Args, results: readonly Result[]): void {
  const perTick = Math.max(1, Math.round((args.services * args.churnPercent) / 100));
  console.log(`\nSoak: ${args.services} Services × ${args.endpoints} endpoints, ${perTick} EndpointSlices (${args.churnPercent}%) changed every second for ${args.seconds} s (real kproxy, list/watch test API server, --iptables-min-sync-period 1s)`);
  table(
    ['mode', 'start→healthy s', 'RSS after first sync MB', 'RSS at end MB', 'end/first', 'target ≤1.25', 'max RSS MB', 'heap used first→end MB', 'changes', 'diff at end'],
    results.map((r) => {
      const ratio = r.endRssMB / r.firstRssMB;
      return [
        r.mode, r.startToHealthyS.toFixed(1), r.firstRssMB.toFixed(0), r.endRssMB.toFixed(0), ratio.toFixed(2), ratio <= 1.25 ? 'met' : 'MISSED',
        r.maxRssMB.toFixed(0), `${r.firstHeapUsedMB.toFixed(0)}→${r.endHeapUsedMB.toFixed(0)}`, String(r.changes),
        `${r.diffClean ? 'clean' : 'DIFFERS'} (${r.diffS.toFixed(0)} s)`,
      ];
    }),
  );
  for (const r of results) {
    console.log(`\n${r.mode}: per window, the incremental syncs (from kproxy's "synced" log lines: means per sync), heap compactions, CPU`);
    table(
      ['window s', 'slices changed', 'incr. syncs', 'full', 'ports changed', 'batch lines', 'mean ms', 'max ms', 'compactions', 'max pause ms', 'CPU per compaction ms', 'kproxy CPU s', 'tools CPU s', 'RSS MB', 'heap used MB'],
      r.windows.map((w) => {
        const f = (x: number, d = 0): string => (Number.isFinite(x) ? x.toFixed(d) : '–');
        return [
          `${w.fromS.toFixed(0)}-${w.toS.toFixed(0)}`, String(w.changes), String(w.syncs), String(w.fullSyncs),
          f(w.meanChanged), f(w.meanLines), f(w.meanMs), f(w.maxMs), String(w.compactions), f(w.maxPauseMs), f(w.compactionCpuMs),
          w.cpuS.toFixed(1), w.childCpuS.toFixed(1), w.end.rssMB.toFixed(0), w.end.heapUsedMB.toFixed(0),
        ];
      }),
    );
    const means = r.windows.map((w) => w.meanMs).filter(Number.isFinite);
    const lines = r.windows.map((w) => w.meanLines).filter(Number.isFinite);
    if (means.length >= 2) console.log(`  per incremental sync, last window against first: duration ${(means[means.length - 1] / means[0]).toFixed(2)}×, batch lines ${(lines[lines.length - 1] / lines[0]).toFixed(2)}×`);
    if (!r.diffClean) console.log(`  kproxy diff: ${r.diffSummary}`);
    if (!r.kproxyAlive) console.log('  kproxy exited during the run');
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  requireKernelPrerequisites();
  // kproxy logs each sync (batch lines, duration) and each compaction at debug level.
  process.env.KPROXY_LOG_LEVEL = 'debug';
  const results: Result[] = [];
  for (const mode of args.modes) {
    console.log(`# ${mode}: ${args.services} Services, ${args.seconds} s of churn ...`);
    results.push(await soak(args, mode));
  }
  report(args, results);
  // RSS and sync cost are measured, not judged here (--quick is far too short
  // for them); a change missing from the kernel is a failure at any size.
  if (results.some((r) => !r.diffClean || !r.kproxyAlive)) {
    console.error('the kernel did not end up holding every change (see "diff at end")');
    process.exit(1);
  }
}

await main();
