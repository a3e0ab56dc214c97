// The IPVS mode at scale, inside user-mode-linux (the only IPVS kernel on
// these machines; compare only with figures taken in the same set-up):
//
//   node bench/ipvs-scale.ts [--services 1000,10000] [--endpoints 10] [--changes 20]
//        [--spacing-ms 2000] [--quick]
//
// For each size, in one guest: a sandbox of namespaces (node, two backend
// pods, a client), the list/watch test API server (bench/ipvs-uml-apiserver.ts,
// in the node namespace) holding N synthetic Services × E endpoints plus a
// probe Service whose endpoint is a real pod, and the real kproxy process
// (--proxy-mode ipvs --kubeconfig, --iptables-min-sync-period 1s). It times
// kproxy's first full sync, then a bare `ipvsadm -R` of the same virtual
// servers into an empty namespace (the peer of the first sync, same run),
// reads kproxy's RSS, and moves the probe's endpoint between the pods
// `--changes` times while a client connects to the probe in a tight loop: a
// change counts as programmed at the first answer from the new pod that only
// answers from it follow. kproxy's debug log gives each sync's batch sizes
// per tool and its rendering against its tools' time.
//
// Reference, not re-run: upstream kube-proxy v1.28.4 in IPVS mode, measured
// earlier in user-mode-linux at 1,000 × 10 (SCALE-FINDINGS.md): first full
// sync about 24 minutes, change → datapath 32-61 s (median 41.6 s).
import { fileURLToPath } from 'node:url';
import { flagValue } from './args.ts';
import { pct } from './fixtures.ts';
import { requireKernelPrerequisites } from '../test/helpers/netns.ts';
import { bootUml, guestPath, type GuestProcess, type Uml } from '../test/helpers/uml.ts';
import { startUmlKproxy, startUmlProber } from '../test/helpers/uml-kproxy.ts';
import { addresses, createUmlSandbox, startUmlBackends } from '../test/helpers/uml-sandbox.ts';
import { programmedAt, proberScript, type Answer } from './prober-script.ts';

interface Args {
  sizes: number[];
  endpoints: number;
  changes: number;
  spacingMs: number;
}

function parseArgs(argv: string[]): Args {
  const get = (f: string): string | undefined => flagValue(argv, f);
  const quick = argv.includes('--quick');
  const sizes = (get('--services') ?? (quick ? '200' : '1000,10000')).split(',').map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('--services takes positive integers, e.g. 1000,10000');
  const endpoints = Number(get('--endpoints') ?? 10);
  const changes = Number(get('--changes') ?? (quick ? 3 : 20));
  const spacingMs = Number(get('--spacing-ms') ?? 2000);
  if (!(spacingMs > 1000)) throw new Error('--spacing-ms must be more than the 1000 ms min sync period');
  return { sizes, endpoints, changes, spacingMs };
}

const probeIP = '10.96.0.10';
const consistentAnswers = 10;
const apiScript = fileURLToPath(new URL('./ipvs-uml-apiserver.ts', import.meta.url));


interface LogLine { time: number; msg: string; ms?: number; full?: boolean; size?: number; renderMs?: number; applyMs?: number; ipvsadm?: number; ipset?: number; ip?: number; iptables?: number }

function logLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try { out.push(JSON.parse(line) as LogLine); } catch { /* a partial last line */ }
  }
  return out;
}

interface Change { readonly ms: number; readonly sync?: LogLine; readonly batch?: LogLine; readonly failed: number }

interface Result {
  services: number;
  firstSyncMs: number;
  firstSync?: LogLine;
  firstBatch?: LogLine;
  healthyMs: number;
  bareMs: number;
  bareLines: number;
  rssMB: number;
  changes: Change[];
  failed: number;
}

async function measure(uml: Uml, args: Args, services: number): Promise<Result> {
  const sandbox = await createUmlSandbox(uml, { pods: 2 });
  const stops: (() => Promise<unknown>)[] = [() => sandbox.destroy()];
  try {
    const backends = await startUmlBackends(uml, sandbox.pods, { tcp: [8080] });
    stops.push(() => backends.stop());
    const node = guestPath(process.execPath);
    const api: GuestProcess = await uml.spawn(['ip', 'netns', 'exec', sandbox.node, node, guestPath(apiScript)], {
      env: { KP_ARGS: JSON.stringify({ services, endpoints: args.endpoints, nodeIP: addresses.nodeIP, podIP: sandbox.pods.map((p) => p.ip) }) },
    });
    stops.push(() => api.kill());
    const { kubeconfig } = JSON.parse(await api.nextLine(600_000)) as { kubeconfig: string };
    const prober = await startUmlProber(uml, sandbox.node);
    stops.push(() => prober.stop());
    const t0 = Date.now();
    const kproxy = await startUmlKproxy(uml, sandbox, prober, {
      mode: 'ipvs', extraArgs: ['--kubeconfig', kubeconfig, '--iptables-min-sync-period', '1s'],
      env: { KPROXY_LOG_LEVEL: 'debug' }, readyTimeoutMs: 3_600_000,
    });
    stops.push(() => kproxy.stop('SIGKILL'));
    const healthyMs = Date.now() - t0;
    let logs = logLines(kproxy.logs());
    for (const until = Date.now() + 10_000; !logs.some((l) => l.msg === 'first sync done') && Date.now() < until;) {
      await new Promise((r) => setTimeout(r, 100));
      logs = logLines(kproxy.logs());
    }
    const first = logs.find((l) => l.msg === 'first sync done');
    if (!first) throw new Error(`no "first sync done" log line\n${kproxy.logs().slice(-3000)}`);
    const firstSync = logs.find((l) => l.msg === 'synced' && l.full);
    const firstBatch = logs.find((l) => l.msg === 'IPVS sync applied' && l.full);
    const status = (await uml.exec(['sh', '-c', `grep VmRSS /proc/$(pgrep -f 'kproxy.js --proxy-mode ipvs' | head -1)/status`])).stdout;
    const rssMB = Number(/(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024;

    // The peer: the same virtual servers, by one bare ipvsadm -R into an empty namespace.
    const bare = await uml.sh(`set -e
ip netns exec ${sandbox.node} ipvsadm -Sn > /tmp/kproxy-bench-vs
ip netns add kproxy-bench-bare
ip -n kproxy-bench-bare link set lo up
wc -l < /tmp/kproxy-bench-vs
s=$(date +%s%N)
ip netns exec kproxy-bench-bare ipvsadm -R < /tmp/kproxy-bench-vs
e=$(date +%s%N)
echo $(( (e - s) / 1000000 ))
ip netns del kproxy-bench-bare
rm -f /tmp/kproxy-bench-vs`, { timeoutMs: 3_600_000 });
    const [bareLines, bareMs] = bare.stdout.trim().split('\n').map(Number);

    const probe = await uml.spawn(['ip', 'netns', 'exec', sandbox.client, node, '-e', proberScript], {
      env: { KP_ARGS: JSON.stringify({ host: probeIP, port: 80, timeoutMs: 500, intervalMs: 5 }) },
    });
    stops.push(() => probe.kill());
    const answers: Answer[] = [];
    if ((await probe.nextLine(60_000)) !== '0 started') throw new Error('the prober did not start');
    void (async () => {
      for (;;) {
        let line: string;
        try { line = await probe.nextLine(3_600_000); } catch { return; }
        const sp = line.indexOf(' ');
        answers.push({ at: Number(line.slice(0, sp)), what: line.slice(sp + 1) });
      }
    })();
    const changes: Change[] = [];
    let failed = 0;
    let current = 1;
    for (let k = 0; k < args.changes; k++) {
      await new Promise((r) => setTimeout(r, args.spacingMs));
      const target = current === 1 ? 2 : 1;
      await api.write(`${JSON.stringify({ probe: target })}\n`);
      const { changed: at } = JSON.parse(await api.nextLine(60_000)) as { changed: number };
      let done: number | undefined;
      for (const until = Date.now() + 120_000; done === undefined && Date.now() < until;) {
        await new Promise((r) => setTimeout(r, 20));
        done = programmedAt(answers, at, `pod-${target}`, consistentAnswers);
      }
      if (done === undefined) {
        failed++;
        console.error(`  ${services}: change ${k + 1} to pod-${target} not seen within 120 s`);
        break;
      }
      current = target;
      await new Promise((r) => setTimeout(r, 200));
      logs = logLines(kproxy.logs());
      changes.push({
        ms: done - at,
        sync: logs.find((l) => l.msg === 'synced' && l.time >= at),
        batch: logs.find((l) => l.msg === 'IPVS sync applied' && l.time >= at),
        failed: answers.filter((a) => a.at >= at && a.at <= done! && a.what.startsWith('!')).length,
      });
    }
    return { services, firstSyncMs: first.ms ?? NaN, firstSync, firstBatch, healthyMs, bareMs, bareLines, rssMB, changes, failed };
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  }
}

const sec = (ms: number): string => (Number.isFinite(ms) ? (ms / 1000).toFixed(ms < 10_000 ? 2 : 1) : '–');

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(r));
}

function report(args: Args, results: readonly Result[]): void {
  console.log(`\nIPVS mode in user-mode-linux: the real kproxy fed by the list/watch test API server, ${args.endpoints} endpoints per Service, changes ${args.spacingMs} ms apart`);
  table(['Services', 'first sync s', 'render s', 'tools s', 'bare ipvsadm -R s (lines)', 'first / bare', 'healthz s', 'RSS MB', 'changes', 'p50 s', 'p95 s', 'max s'],
    results.map((r) => {
      const ms = r.changes.map((c) => c.ms);
      return [
        String(r.services), sec(r.firstSyncMs), sec(r.firstSync?.renderMs ?? NaN), sec(r.firstSync?.applyMs ?? NaN),
        `${sec(r.bareMs)} (${r.bareLines})`, (r.firstSyncMs / r.bareMs).toFixed(2), sec(r.healthyMs), r.rssMB.toFixed(0),
        `${r.changes.length}${r.failed ? ` (${r.failed} failed)` : ''}`, sec(pct(ms, 50)), sec(pct(ms, 95)), sec(Math.max(...ms)),
      ];
    }));
  for (const r of results) {
    const b = r.firstBatch;
    console.log(`\n${r.services}: first sync batches: ipvsadm ${b?.ipvsadm} lines, ipset ${b?.ipset}, ip ${b?.ip}, iptables ${b?.iptables}`);
    const inc = r.changes.map((c) => `${c.ms}ms[${c.batch ? `ipvsadm ${c.batch.ipvsadm}, ipset ${c.batch.ipset}, ip ${c.batch.ip}` : '?'}; render ${c.sync?.renderMs?.toFixed(1) ?? '?'} ms, tools ${c.sync?.applyMs?.toFixed(0) ?? '?'} ms${c.failed ? `; ${c.failed} failed attempts` : ''}]`);
    console.log(`  per change, to datapath [lines per tool; kproxy's render and tool time]: ${inc.join(' ')}`);
  }
  console.log('\nTargets: 1,000 × 10: first sync < 60 s, change p50 < 0.5 s; 10,000 × 10: first sync ≤ 1.5 × the bare ipvsadm -R, change p50 < 1 s, RSS < 250 MB.');
  for (const r of results) {
    const p50 = pct(r.changes.map((c) => c.ms), 50);
    if (r.services === 1000) console.log(`  1,000: first sync ${sec(r.firstSyncMs)} s (< 60: ${r.firstSyncMs < 60_000 ? 'met' : 'NOT met'}), change p50 ${sec(p50)} s (< 0.5: ${p50 < 500 ? 'met' : 'NOT met'})`);
    if (r.services === 10000) {
      console.log(`  10,000: first sync ${(r.firstSyncMs / r.bareMs).toFixed(2)} × the bare ipvsadm -R (≤ 1.5: ${r.firstSyncMs <= 1.5 * r.bareMs ? 'met' : 'NOT met'}), change p50 ${sec(p50)} s (< 1: ${p50 < 1000 ? 'met' : 'NOT met'}), RSS ${r.rssMB.toFixed(0)} MB (< 250: ${r.rssMB < 250 ? 'met' : 'NOT met'})`);
    }
  }
  console.log('\nReference (not re-run): upstream kube-proxy v1.28.4, IPVS mode, in user-mode-linux at 1,000 × 10: first full sync about 24 minutes, change → datapath 32-61 s (median 41.6 s); behind it, ipvsadm -R of 10,000 × 10 took 162 s and one ipset add 0.33 s there (SCALE-FINDINGS.md).');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  requireKernelPrerequisites();
  const uml = await bootUml({ memMB: 3072 });
  const results: Result[] = [];
  try {
    for (const n of args.sizes) {
      const started = Date.now();
      console.log(`# ${n} Services × ${args.endpoints} endpoints ...`);
      const r = await measure(uml, args, n);
      results.push(r);
      console.log(`#   first sync ${sec(r.firstSyncMs)} s, bare ipvsadm -R ${sec(r.bareMs)} s, change p50 ${sec(pct(r.changes.map((c) => c.ms), 50))} s, ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
    }
  } finally {
    await uml.halt();
  }
  report(args, results);
  if (results.some((r) => r.failed > 0)) {
    console.error('some changes never reached the datapath');
    process.exit(1);
  }
}

await main();
