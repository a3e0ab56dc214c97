// End-to-end latency of the whole kproxy, as a node runs it: an
// EndpointSlice change made at the API server → the new endpoint answering
// through the kernel's datapath.
//
//   node bench/pipeline-latency.ts [--services 1000,5000,10000] [--modes iptables,nftables]
//        [--changes 20] [--spacing-ms 2000] [--variant nft|legacy|both] [--endpoints 10]
//        [--sync-period 30s] [--quick]
//
// For each mode and size: a fresh sandbox (test/helpers/netns.ts), the list/
// watch test API server holding N synthetic Services × 10 endpoints plus one
// probe Service whose single endpoint is a real backend pod, and the real
// kproxy binary (bin/kproxy.js --kubeconfig ... --iptables-min-sync-period 1s)
// in the node namespace, reaching the API server through a relay. It times
// start → initial list → first sync → /healthz 200, reads kproxy's RSS, then
// moves the probe Service's endpoint between pod-1 and pod-2 `--changes`
// times, each further apart than the min sync period, while a client in the
// client namespace connects to the probe ClusterIP in a tight loop. A change
// counts as programmed at the first answer from the new pod that is followed
// only by answers from it (`consistentAnswers` in a row).
// --variant picks the iptables variant (KPROXY_IPTABLES_VARIANT) for the
// iptables mode (both: one run with each; default: the system's). Needs root, iproute2, iptables, nftables, ipset, conntrack.
import { readFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { ProxyMode } from '../modes/registry.ts';
import { toolPath } from '../lib/exec.ts';
import { addresses, createSandbox, requireKernelPrerequisites, run, type Sandbox } from '../test/helpers/netns.ts';
import { connectMany, httpGet, nodeIn, startBackends, withTimeout } from '../test/helpers/traffic.ts';
import { metricsPort, metricValue, startKproxy, type KproxyProcess } from '../test/helpers/kproxy-process.ts';
import { TestApiServer, type KubeObject } from '../test/helpers/apiserver.ts';
import { kubeconfigInNamespace } from '../test/e2e/api-relay.ts';
import { nodeObject, serviceObject, sliceObject, type ServiceSpec } from '../test/e2e/cluster.ts';
import { syntheticService, syntheticSlice } from '../test/fixtures/proxy/synthetic.ts';
import { triggerTimeAnnotation } from '../proxy/tracker.ts';
import { flagValue } from './args.ts';
import { pct } from './fixtures.ts';
import { programmedAt, proberScript, type Answer } from './prober-script.ts';

type Variant = 'nft' | 'legacy';

interface Args {
  sizes: number[];
  modes: ProxyMode[];
  changes: number;
  endpoints: number;
  spacingMs: number;
  minSync: string;
  /** kproxy's --iptables-sync-period (its drift-check period), when given. */
  syncPeriod?: string;
  /** Iptables variants to run the iptables mode with (the system's default when empty). */
  variants: Variant[];
  /** Longest wait for one change to show in the datapath. */
  changeTimeoutMs: number;
}

function parseArgs(argv: string[]): Args {
  const get = (flag: string): string | undefined => flagValue(argv, flag);
  const quick = argv.includes('--quick');
  const sizes = (get('--services') ?? (quick ? '200' : '1000,5000')).split(',').map(Number);
  const modes = (get('--modes') ?? 'iptables,nftables').split(',');
  const variant = get('--variant') ?? process.env.KPROXY_IPTABLES_VARIANT;
  const changes = Number(get('--changes') ?? (quick ? 5 : 20));
  const spacingMs = Number(get('--spacing-ms') ?? (quick ? 1500 : 2000));
  if (sizes.some((n) => !Number.isInteger(n) || n < 0)) throw new Error('--services takes non-negative integers, e.g. 1000,5000');
  if (modes.some((m) => m !== 'iptables' && m !== 'nftables')) throw new Error(`--modes takes iptables and/or nftables (got ${modes.join(',')})`);
  if (variant !== undefined && !['', 'nft', 'legacy', 'both'].includes(variant)) throw new Error(`--variant must be nft, legacy or both (got ${variant})`);
  const endpoints = Number(get('--endpoints') ?? 10);
  if (!Number.isInteger(endpoints) || endpoints < 1 || endpoints > 250) throw new Error('--endpoints takes an integer from 1 to 250');
  if (!Number.isInteger(changes) || changes < 1) throw new Error('--changes takes a positive integer');
  // The min sync period is 1 s; changes closer than that would measure the rate limit.
  if (!(spacingMs > 1000)) throw new Error('--spacing-ms must be more than the 1000 ms min sync period');
  return {
    sizes, modes: modes as ProxyMode[], changes, endpoints, spacingMs, minSync: '1s',
    variants: variant === 'both' ? ['nft', 'legacy'] : variant ? [variant as Variant] : [],
    changeTimeoutMs: Number(get('--change-timeout-ms') ?? 120_000),
    ...(get('--sync-period') ? { syncPeriod: get('--sync-period') } : {}),
  };
}

// ---- the probe Service and its client ----

const probeIP = '10.96.0.10';
const probePort = 80;
const podPort = 8080;
const consistentAnswers = 10;

function probeSpec(pod: number): ServiceSpec {
  return {
    name: 'probe', namespace: 'bench-probe', clusterIP: probeIP,
    ports: [{ name: 'http', port: probePort, targetPort: podPort }],
    endpoints: [{ ip: addresses.podIP(pod), nodeName: 'node-a' }],
  };
}

/** The probe's slice, with the trigger-time annotation the EndpointSlice controller sets. */
function probeSlice(pod: number, triggerAt: number): KubeObject {
  const slice = sliceObject(probeSpec(pod)) as unknown as KubeObject & { metadata: Record<string, unknown> };
  slice.metadata.annotations = { [triggerTimeAnnotation]: new Date(triggerAt).toISOString() };
  return slice;
}



interface Prober {
  readonly answers: Answer[];
  stop(): void;
}

async function startProber(ns: string): Promise<Prober> {
  const child: ChildProcess = nodeIn(ns, proberScript, { host: probeIP, port: probePort, timeoutMs: 250, intervalMs: 2 });
  const answers: Answer[] = [];
  let started!: () => void;
  const ready = new Promise<void>((r) => { started = r; });
  createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
    const sp = line.indexOf(' ');
    const what = line.slice(sp + 1);
    if (what === 'started') started();
    else answers.push({ at: Number(line.slice(0, sp)), what });
  });
  await withTimeout(ready, 30_000, 'prober start');
  return { answers, stop: () => { child.kill('SIGKILL'); } };
}

// ---- kproxy's own view ----

interface LogLine { time: number; msg: string; ms?: number; full?: boolean; changed?: number; items?: number }

function logLines(kproxy: KproxyProcess): LogLine[] {
  const out: LogLine[] = [];
  for (const line of kproxy.logs().split('\n')) {
    if (!line.startsWith('{')) continue;
    try { out.push(JSON.parse(line) as LogLine); } catch { /* a partial last line */ }
  }
  return out;
}

async function metrics(sandbox: Sandbox): Promise<string> {
  const r = await httpGet(sandbox.node, `http://127.0.0.1:${metricsPort}/metrics`);
  if (r.status !== 200) throw new Error(`kproxy metrics answered ${r.status} ${r.error ?? ''}`);
  return r.body;
}

/** The node process's resident set in MB (`ip netns exec` execs node in place, so the pid is node's). */
function rssMB(pid: number): number {
  const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  if (!cmd.includes('kproxy')) throw new Error(`pid ${pid} is not kproxy: ${cmd.replaceAll('\0', ' ')}`);
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

async function ruleCount(sandbox: Sandbox, mode: ProxyMode, variant: Variant | undefined): Promise<string> {
  if (mode === 'nftables') {
    const { stdout } = await run(toolPath('ip'), ['netns', 'exec', sandbox.node, toolPath('nft'), 'list', 'ruleset']);
    return `${stdout.split('\n').length} nft lines`;
  }
  const { stdout } = await run(toolPath('ip'), ['netns', 'exec', sandbox.node, toolPath(variant ? `iptables-${variant}-save` : 'iptables-save'), '-t', 'nat']);
  return `${stdout.split('\n').filter((l) => l.startsWith('-A')).length} nat rules`;
}

// ---- one measurement ----

interface Change {
  readonly ms: number;
  /** kproxy's own sync (render + kernel) that applied it, from its "synced" log line. */
  readonly syncMs?: number;
  /** From the change at the API server to the start of that sync (watch, tracker, runner). */
  readonly beforeSyncMs?: number;
  /** When the change was made, in ms after kproxy's first sync began (its periodic checks count from there). */
  readonly sinceRunnerStartMs: number;
  readonly full?: boolean;
  /** kubeproxy_network_programming_duration_seconds for this change. */
  readonly programmingS?: number;
  /** Attempts answered by neither pod (timeouts, refusals) between the change and its programming. */
  readonly failedAttempts: readonly string[];
}

interface Result {
  mode: ProxyMode;
  variant?: Variant;
  services: number;
  listMs: number;
  /** kproxy's "listed <Kind>s" log lines: ms after start, items. */
  listed: { kind: string; ms: number; items: number }[];
  firstSyncMs: number;
  startToFirstSyncMs: number;
  healthyMs: number;
  startCpuS: number;
  rssMB: number;
  rules: string;
  changes: Change[];
  failed: number;
}

async function measure(args: Args, mode: ProxyMode, services: number, variant: Variant | undefined): Promise<Result> {
  // startKproxy passes this process's environment on.
  if (variant) process.env.KPROXY_IPTABLES_VARIANT = variant;
  else delete process.env.KPROXY_IPTABLES_VARIANT;
  const sandbox = await createSandbox({ pods: 2, prefix: 'kpbench' });
  const cleanups: (() => Promise<unknown> | void)[] = [() => sandbox.destroy()];
  try {
    const backends = await startBackends(sandbox.pods, { tcp: [podPort] });
    cleanups.push(() => backends.stop());
    const api = await TestApiServer.start();
    cleanups.push(() => api.close());
    api.upsert(nodeObject({ name: 'node-a', ip: addresses.nodeIP }) as unknown as KubeObject);
    for (let i = 0; i < services; i++) {
      api.upsert(syntheticService(i) as unknown as KubeObject);
      api.upsert(syntheticSlice(i, args.endpoints) as unknown as KubeObject);
    }
    api.upsert(serviceObject(probeSpec(1)) as unknown as KubeObject);
    api.upsert(probeSlice(1, Date.now()));

    const config = await kubeconfigInNamespace(api, sandbox.node);
    cleanups.push(() => config.close());
    const kubeconfig = config.path;

    // The API server runs in this process: its CPU during start-up is the cost of serving the list.
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    const kproxy = await startKproxy({
      sandbox, mode, kubeconfig,
      extraArgs: ['--iptables-min-sync-period', args.minSync, ...(args.syncPeriod ? ['--iptables-sync-period', args.syncPeriod] : [])],
      readyTimeoutMs: 3_600_000,
    });
    const healthyMs = Date.now() - t0;
    const startCpu = process.cpuUsage(cpu0);
    cleanups.push(() => kproxy.stop('SIGKILL'));
    const logs = logLines(kproxy);
    const listed = logs.find((l) => l.msg === 'initial list complete');
    const first = logs.find((l) => l.msg === 'first sync done')
      ?? await (async () => {
        // healthz turns 200 as the first sync ends; the log line follows it.
        for (const until = Date.now() + 10_000; Date.now() < until;) {
          const l = logLines(kproxy).find((x) => x.msg === 'first sync done');
          if (l) return l;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`no "first sync done" log line\n${kproxy.logs().slice(-3000)}`);
      })();
    const rss = rssMB(kproxy.pid);
    const rules = await ruleCount(sandbox, mode, mode === 'iptables' ? variant : undefined);

    const check = await connectMany(sandbox.client, probeIP, probePort, { count: 20 });
    if (check.byBackend['pod-1'] !== 20) throw new Error(`probe Service not answered by pod-1 after the first sync: ${JSON.stringify(check.byBackend)} (${check.timedOut} timeouts, ${check.refused} refused)`);

    const prober = await startProber(sandbox.client);
    cleanups.push(() => prober.stop());
    const changes: Change[] = [];
    let failed = 0;
    let current = 1;
    let last = Date.now();
    let before = await metrics(sandbox);
    for (let k = 0; k < args.changes; k++) {
      const wait = last + args.spacingMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const target = current === 1 ? 2 : 1;
      const at = Date.now();
      api.upsert(probeSlice(target, at));
      last = at;
      let done: number | undefined;
      for (const until = at + args.changeTimeoutMs; done === undefined && Date.now() < until;) {
        await new Promise((r) => setTimeout(r, 20));
        done = programmedAt(prober.answers, at, `pod-${target}`, consistentAnswers);
      }
      if (done === undefined) {
        failed++;
        console.error(`  ${mode} ${services}: change ${k + 1} to pod-${target} not seen within ${args.changeTimeoutMs} ms`);
        break;
      }
      current = target;
      const failedAttempts = prober.answers.filter((a) => a.at >= at && a.at <= done && a.what.startsWith('!')).map((a) => `${a.what.slice(1)}@+${a.at - at}`);
      // The log line may trail the datapath by a few ms.
      let synced: LogLine | undefined;
      for (const until = Date.now() + 2000; !synced && Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
        synced = logLines(kproxy).find((l) => l.msg === 'synced' && l.time >= at);
      }
      const after = await metrics(sandbox);
      const n = (metricValue(after, 'kubeproxy_network_programming_duration_seconds_count') ?? 0)
        - (metricValue(before, 'kubeproxy_network_programming_duration_seconds_count') ?? 0);
      const s = (metricValue(after, 'kubeproxy_network_programming_duration_seconds_sum') ?? 0)
        - (metricValue(before, 'kubeproxy_network_programming_duration_seconds_sum') ?? 0);
      before = after;
      changes.push({
        ms: done - at, failedAttempts, sinceRunnerStartMs: at - (first.time - (first.ms ?? 0)),
        ...(synced?.ms !== undefined ? { syncMs: synced.ms, full: synced.full, beforeSyncMs: synced.time - synced.ms - at } : {}),
        ...(n > 0 ? { programmingS: s / n } : {}),
      });
    }
    return {
      mode, services, ...(mode === 'iptables' ? { variant: variant ?? await systemVariant() } : {}),
      listMs: listed ? listed.time - t0 : NaN,
      listed: logs.filter((l) => /^listed \w+$/.test(l.msg)).map((l) => ({ kind: l.msg.slice(7), ms: l.time - t0, items: l.items ?? 0 })),
      firstSyncMs: first.ms ?? NaN,
      startToFirstSyncMs: first.time - t0,
      healthyMs, startCpuS: (startCpu.user + startCpu.system) / 1e6, rssMB: rss, rules, changes, failed,
    };
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  }
}

async function systemVariant(): Promise<Variant> {
  const { stdout } = await run(toolPath('iptables'), ['--version']);
  return /legacy/.test(stdout) ? 'legacy' : 'nft';
}

// ---- report ----


const sec = (ms: number): string => (Number.isFinite(ms) ? (ms / 1000).toFixed(ms < 10_000 ? 2 : 1) : '–');

// Upstream kube-proxy v1.28.4 (iptables mode) on these machines, from
// SCALE-FINDINGS.md: change → reachable (median of 5), first sync, RSS.
const reference: Record<Variant, Record<number, { changeS?: number; firstS?: number }>> = {
  nft: { 1000: { changeS: 0.15, firstS: 7.9 }, 5000: { changeS: 1.0, firstS: 748 } },
  legacy: { 1000: { changeS: 0.19, firstS: 0.49 }, 5000: { changeS: 0.93, firstS: 2.8 }, 10000: { changeS: 2.8, firstS: 12.4 } },
};
const referenceRss: Record<number, string> = { 1000: '80', 5000: '190-210', 10000: '320-475' };

function report(args: Args, results: readonly Result[]): void {
  console.log(`\nEndpointSlice change → new endpoint answering through the datapath (real kproxy, --iptables-min-sync-period ${args.minSync}, changes ${args.spacingMs} ms apart, ${args.endpoints} endpoints per Service)`);
  const head = ['mode', 'Services', 'list s', 'first sync s', 'start→synced s', 'healthz s', 'RSS MB', 'rules', 'changes', 'p50 s', 'p95 s', 'max s', 'sync p50 ms', 'prog. metric p50 s'];
  const rows = results.map((r) => {
    const ms = r.changes.map((c) => c.ms);
    const syncs = r.changes.flatMap((c) => (c.syncMs === undefined ? [] : [c.syncMs]));
    const prog = r.changes.flatMap((c) => (c.programmingS === undefined ? [] : [c.programmingS]));
    return [
      r.mode + (r.variant ? `/${r.variant}` : ''), String(r.services), sec(r.listMs), sec(r.firstSyncMs), sec(r.startToFirstSyncMs), sec(r.healthyMs),
      r.rssMB.toFixed(0), r.rules, `${r.changes.length}${r.failed ? ` (${r.failed} failed)` : ''}`,
      sec(pct(ms, 50)), sec(pct(ms, 95)), sec(Math.max(...ms)),
      syncs.length ? pct(syncs, 50).toFixed(0) : '–', prog.length ? pct(prog, 50).toFixed(2) : '–',
    ];
  });
  table(head, rows);

  console.log('\nReference, measured on these machines, not in this run: upstream kube-proxy v1.28.4, iptables mode (SCALE-FINDINGS.md; change latency is a median of 5).');
  console.log('nftables-mode rows are set against the iptables-nft peer (v1.28 has no nftables mode).');
  const refRows = results.map((r) => {
    const variant = r.variant ?? 'nft';
    const ref = reference[variant][r.services];
    const p50 = pct(r.changes.map((c) => c.ms), 50) / 1000;
    const first = r.firstSyncMs / 1000;
    const rss = referenceRss[r.services];
    const rssMid = rss ? rss.split('-').map(Number).reduce((a, b) => a + b) / rss.split('-').length : NaN;
    const ratio = (ours: number, theirs?: number): string => (theirs && Number.isFinite(ours) ? `${(ours / theirs).toPrecision(2)}×` : '–');
    return [
      r.mode + (r.variant ? `/${r.variant}` : ''), String(r.services), `iptables/${variant}`,
      p50.toFixed(2), ref?.changeS?.toFixed(2) ?? '–', ratio(p50, ref?.changeS),
      first.toFixed(2), ref?.firstS?.toFixed(2) ?? '–', ratio(first, ref?.firstS),
      r.rssMB.toFixed(0), rss ?? '–', ratio(r.rssMB, rssMid),
    ];
  });
  table(['kproxy', 'Services', 'peer', 'change p50 s', 'peer s', 'ratio', 'first sync s', 'peer s', 'ratio', 'RSS MB', 'peer MB', 'ratio'], refRows);

  for (const r of results) {
    const detail = r.changes.map((c) => `${c.ms}${c.syncMs !== undefined ? `/${c.beforeSyncMs}+${c.syncMs}${c.full ? 'F' : ''}` : ''}`).join(' ');
    console.log(`\n${r.mode}${r.variant ? `/${r.variant}` : ''} ${r.services}: per change, ms to datapath / ms before kproxy's sync began + that sync's ms (F = full): ${detail}`);
    // The sync itself is the backend's work; a long wait before it is the pipeline's.
    const waited = r.changes.flatMap((c, k) => (c.beforeSyncMs !== undefined && c.beforeSyncMs > 100 ? [`change ${k + 1} (made ${(c.sinceRunnerStartMs / 1000).toFixed(1)} s after the first sync began) waited ${c.beforeSyncMs} ms`] : []));
    if (waited.length) console.log(`  changes that waited over 100 ms for their sync to begin: ${waited.join('; ')}`);
    const failures = r.changes.flatMap((c, k) => (c.failedAttempts.length ? [`change ${k + 1}: ${c.failedAttempts.join(' ')}`] : []));
    if (failures.length) console.log(`  connections that failed while a change was programmed (ms after it): ${failures.join('; ')}`);
    console.log(`  start-up: ${r.listed.map((l) => `${l.kind} (${l.items}) listed at ${sec(l.ms)} s`).join(', ')}; the bench process (the API server) used ${r.startCpuS.toFixed(2)} s CPU until /healthz was 200`);
  }
}

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(r));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  requireKernelPrerequisites();
  // kproxy logs every sync at debug level, with its duration.
  process.env.KPROXY_LOG_LEVEL = 'debug';
  const results: Result[] = [];
  for (const services of args.sizes) {
    type Run = { mode: ProxyMode; variant: Variant | undefined };
    const runs = args.modes.flatMap((mode): Run[] => (mode === 'iptables' && args.variants.length > 0
      ? args.variants.map((variant) => ({ mode, variant }))
      : [{ mode, variant: undefined }]));
    for (const { mode, variant } of runs) {
      const started = Date.now();
      console.log(`# ${mode}${variant ? `/${variant}` : ''} ${services} Services × ${args.endpoints} endpoints ...`);
      const r = await measure(args, mode, services, variant);
      results.push(r);
      const ms = r.changes.map((c) => c.ms);
      console.log(`#   first sync ${sec(r.firstSyncMs)} s, change p50 ${sec(pct(ms, 50))} s, ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
    }
  }
  report(args, results);
  if (results.some((r) => r.failed > 0)) {
    console.error('some changes never reached the datapath');
    process.exit(1);
  }
}

await main();
