// Someone else changes kproxy's rules in the node namespace (the cases of
// the "hostile node" finding): a real kproxy process must put them back
// within one --iptables-sync-period, say so in its log and in
// kubeproxy_sync_proxy_rules_repairs_total, leave `kproxy diff` clean and
// traffic working. And its own syncs, however many, are never counted as
// tampering. iptables on both variants (nf_tables events on iptables-nft,
// the periodic digest check on iptables-legacy), nftables (events).
// The events come from kproxy's own listener; tamper-nft-monitor.test.ts
// runs the event cases again with `nft monitor`, as on a node where the
// listener's addon was not built.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addresses, createSandbox, requireKernelPrerequisites, type Sandbox } from '../helpers/netns.ts';
import { connectMany, startBackends } from '../helpers/traffic.ts';
import { kproxyArgs, metricValue, runKproxy, startKproxy, type KproxyProcess } from '../helpers/kproxy-process.ts';
import { clusterYaml, writeAtomically, type ServiceSpec } from './cluster.ts';
import { semaphore } from './run-scenario.ts';

const periodS = 5;
/** Slack for a loaded machine on top of the period. */
const slackMs = 3000;
const nodeSpec = { name: 'node-a', ip: addresses.nodeIP };
const eps = (which: readonly number[]) => which.map((i) => ({ ip: addresses.podIP(i) }));
const services: ServiceSpec[] = [
  { name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }], endpoints: eps([1, 2, 3]) },
  { name: 'web2', clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 80, targetPort: 8080 }], endpoints: eps([1, 2]) },
  { name: 'empty', clusterIP: '10.96.0.12', ports: [{ name: 'http', port: 80, targetPort: 8080 }], endpoints: [] },
];

type Kind = 'iptables-nft' | 'iptables-legacy' | 'nftables';

interface Setup {
  readonly t: ExecutionContext;
  readonly sandbox: Sandbox;
  readonly kproxy: KproxyProcess;
  readonly sourceFile: string;
  readonly kind: Kind;
  /** Runs a tool in the node namespace as someone else would (not through kproxy). */
  sh(tool: string, args: readonly string[], input?: string): Promise<string>;
}

const limit = semaphore(Number(process.env.KPROXY_E2E_CONCURRENCY ?? 2));

/** kproxy watches with nft monitor: its listener's addon is made unloadable (KPROXY_E2E_NFT_EVENTS=nft-monitor). */
const fallback = process.env.KPROXY_E2E_NFT_EVENTS === 'nft-monitor';
const sourceEnv: Record<string, string> = fallback ? { KPROXY_NFT_EVENTS_ADDON: '/nonexistent/kproxy_nft_events.node' } : {};
/** The variants whose repairs ride on nf_tables events (all of them with the listener). */
const eventKinds = (kinds: readonly Kind[]): Kind[] => kinds.filter((k) => !fallback || k !== 'iptables-legacy');
const titled = (title: string): string => (fallback ? `nft monitor fallback: ${title}` : title);

function modeOf(kind: Kind): { mode: 'iptables' | 'nftables'; env: Record<string, string> } {
  return kind === 'nftables' ? { mode: 'nftables', env: {} } : { mode: 'iptables', env: { KPROXY_IPTABLES_VARIANT: kind.slice('iptables-'.length) } };
}

async function withKproxy(t: ExecutionContext, kind: Kind, periodSeconds: number, body: (s: Setup) => Promise<void>, wrap?: readonly string[]): Promise<void> {
  requireKernelPrerequisites();
  const sandbox = await createSandbox();
  t.teardown(() => sandbox.destroy());
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-tamper-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sourceFile = join(dir, 'cluster.yaml');
  await writeAtomically(sourceFile, clusterYaml(nodeSpec, services));
  const backends = await startBackends(sandbox.pods, { tcp: [8080], udp: [] });
  t.teardown(() => backends.stop());
  const { mode, env } = modeOf(kind);
  const kproxy = await startKproxy({ sandbox, mode, sourceFile, env: { ...env, ...sourceEnv }, wrap, extraArgs: ['--iptables-sync-period', `${periodSeconds}s`] });
  t.teardown(async () => { await kproxy.stop('SIGKILL'); });
  if (kind !== 'iptables-legacy') {
    // The event source is the one this run means to test.
    const watching = logLines(kproxy).find((l) => l.msg === 'watching nf_tables changes') as (LogLine & { source?: string }) | undefined;
    t.is(watching?.source, fallback ? 'nft monitor' : 'listener', `kproxy watches nf_tables with ${fallback ? 'nft monitor' : 'its listener'}`);
    if (fallback) t.true(logLines(kproxy).some((l) => /the nf_tables event listener is not built/.test(l.msg)), 'the log says the listener is not built');
  }
  const sh = async (tool: string, args: readonly string[], input?: string): Promise<string> => (await sandbox.exec(sandbox.node, tool, args, input)).stdout;
  try {
    await body({ t, sandbox, kproxy, sourceFile, kind, sh });
  } finally {
    if (!t.passed) t.log(`kproxy log, last part:\n${kproxy.logs().slice(-6000)}`);
  }
}

async function trafficWorks(s: Setup, what: string): Promise<void> {
  const r = await connectMany(s.sandbox.client, '10.96.0.10', 80, { count: 30 });
  s.t.is(r.answered, r.attempts, `${what}: every connection to the ClusterIP answered: ${JSON.stringify(r.byBackend)} ${JSON.stringify(r.failures.slice(0, 5))}`);
  s.t.true(Object.keys(r.byBackend).length >= 2, `${what}: spread over the endpoints: ${JSON.stringify(r.byBackend)}`);
  const none = await connectMany(s.sandbox.client, '10.96.0.12', 80, { count: 3, timeoutMs: 2000 });
  s.t.is(none.refused, 3, `${what}: a Service without endpoints is refused at once: ${JSON.stringify(none)}`);
}

async function diffClean(s: Setup): Promise<void> {
  const { mode, env } = modeOf(s.kind);
  const args = kproxyArgs({ sandbox: s.sandbox, mode, sourceFile: s.sourceFile }).filter((a, i, all) => !/bind-address|min-sync-period/.test(a) && !/bind-address|min-sync-period/.test(all[i - 1] ?? ''));
  const r = await runKproxy(s.sandbox, ['diff', ...args], env);
  s.t.is(r.code, 0, `kproxy diff is clean:\n${r.stdout.slice(0, 3000)}${r.stderr.slice(0, 1000)}`);
}

interface LogLine { readonly time: number; readonly msg: string; readonly repaired?: string[] }

function logLines(k: KproxyProcess): LogLine[] {
  const out: LogLine[] = [];
  for (const l of k.logs().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a partial line
    }
  }
  return out;
}

const repairedMsg = 'repaired kernel rules someone else changed';

async function repairsTotal(k: KproxyProcess): Promise<Record<string, number>> {
  const text = await k.metrics();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^kubeproxy_sync_proxy_rules_repairs_total\{mode="[^"]+",what="([^"]+)"\} (\S+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

interface Case {
  readonly title: string;
  readonly kinds: readonly Kind[];
  tamper(s: Setup): Promise<void>;
  /** Each must be found in the log line's list of repaired objects. */
  readonly repaired: (s: Setup) => RegExp;
  /** Repair kinds the counter must show. */
  readonly counted: readonly string[];
}

const ipt = (s: Setup, suffix = ''): string => `iptables-${s.kind.slice('iptables-'.length)}${suffix}`;

async function webChain(s: Setup): Promise<string> {
  const save = await s.sh(ipt(s, '-save'), ['-t', 'nat']);
  const m = /^-A (KUBE-SVC-\S+) .*"default\/web:http -> /m.exec(save);
  if (!m) throw new Error(`no KUBE-SVC chain for default/web:http in\n${save}`);
  return m[1];
}

const cases: readonly Case[] = [
  {
    title: 'iptables -t nat -F',
    kinds: ['iptables-nft', 'iptables-legacy'],
    tamper: async (s) => { await s.sh(ipt(s), ['-w', '-t', 'nat', '-F']); },
    repaired: () => /(chain ip nat KUBE-SERVICES|full )/,
    counted: [],
  },
  {
    title: 'iptables -t filter -F',
    kinds: ['iptables-nft', 'iptables-legacy'],
    tamper: async (s) => { await s.sh(ipt(s), ['-w', '-t', 'filter', '-F']); },
    repaired: () => /(chain ip filter KUBE-SERVICES|jump ip filter OUTPUT|full )/,
    counted: [],
  },
  {
    title: 'flushing one KUBE-SVC chain',
    kinds: ['iptables-nft', 'iptables-legacy'],
    tamper: async (s) => { await s.sh(ipt(s), ['-w', '-t', 'nat', '-F', await webChain(s)]); },
    repaired: () => /^chain ip nat KUBE-SVC-/,
    counted: ['chain'],
  },
  {
    title: 'deleting the jump from PREROUTING to KUBE-SERVICES',
    kinds: ['iptables-nft', 'iptables-legacy'],
    tamper: async (s) => { await s.sh(ipt(s), ['-w', '-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']); },
    repaired: () => /^jump ip nat PREROUTING/,
    counted: ['jump'],
  },
  {
    title: 'deleting the canary chain',
    kinds: ['iptables-nft', 'iptables-legacy'],
    // Flushed and deleted in one transaction: kproxy would refill it between two commands.
    tamper: async (s) => { await s.sh(ipt(s, '-restore'), ['-w', '--noflush'], '*mangle\n:KUBE-PROXY-CANARY - [0:0]\n-X KUBE-PROXY-CANARY\nCOMMIT\n'); },
    repaired: () => /^canary ip mangle KUBE-PROXY-CANARY/,
    counted: ['canary'],
  },
  {
    title: 'flushing one chain of table ip kproxy',
    kinds: ['nftables'],
    tamper: async (s) => { await s.sh('nft', ['flush', 'chain', 'ip', 'kproxy', 'cluster-3']); },
    repaired: () => /^chain ip kproxy cluster-3$/,
    counted: ['chain'],
  },
  {
    title: 'deleting one service-ips element',
    kinds: ['nftables'],
    tamper: async (s) => { await s.sh('nft', ['delete', 'element', 'ip', 'kproxy', 'service-ips', '{ 10.96.0.10 . tcp . 80 }']); },
    repaired: () => /^element ip kproxy service-ips \{ 10\.96\.0\.10 \. tcp \. 80 \}$/,
    counted: ['element'],
  },
  {
    title: 'deleting one endpoint map element',
    kinds: ['nftables'],
    tamper: async (s) => { await s.sh('nft', ['delete', 'element', 'ip', 'kproxy', 'endpoints-tcp', '{ 10.96.0.10 . 80 . 1 }']); },
    repaired: () => /^element ip kproxy endpoints-tcp \{ 10\.96\.0\.10 \. 80 \. 1 \}$/,
    counted: ['element'],
  },
  {
    title: 'deleting the whole table',
    kinds: ['nftables'],
    tamper: async (s) => { await s.sh('nft', ['delete', 'table', 'ip', 'kproxy']); },
    repaired: () => /^full delete table ip kproxy/,
    counted: ['full'],
  },
];

for (const c of cases) {
  for (const kind of eventKinds(c.kinds)) {
    test(titled(`${kind}: ${c.title} is repaired within one sync period`), (t) => limit(() => withKproxy(t, kind, periodS, async (s) => {
      await trafficWorks(s, 'before');
      // Let the first periodic check pass, so that the tampering lands at a random point of a period.
      await new Promise((r) => setTimeout(r, 500));
      const before = await repairsTotal(s.kproxy);
      t.deepEqual(before, {}, 'nothing repaired before');
      const t0 = Date.now();
      await c.tamper(s);
      const deadline = t0 + periodS * 1000 + slackMs;
      let line: LogLine | undefined;
      while (!line && Date.now() < deadline) {
        line = logLines(s.kproxy).find((l) => l.msg === repairedMsg);
        if (!line) await new Promise((r) => setTimeout(r, 50));
      }
      if (!line) return t.fail(`no repair within ${periodS} s + ${slackMs} ms`);
      const tookMs = line.time - t0;
      t.log(`${kind}: ${c.title}: found and repaired ${tookMs} ms after the change; repaired ${JSON.stringify(line.repaired)}`);
      t.true(tookMs <= periodS * 1000 + slackMs, `repaired after ${tookMs} ms`);
      const pattern = c.repaired(s);
      t.true((line.repaired ?? []).some((r) => pattern.test(r)), `the log names what was repaired: ${JSON.stringify(line.repaired)} ~ ${pattern}`);
      const after = await repairsTotal(s.kproxy);
      t.true(Object.values(after).reduce((a, b) => a + b, 0) > 0, `the repair counter moved: ${JSON.stringify(after)}`);
      for (const w of c.counted) t.true((after[w] ?? 0) > 0, `counted as ${w}: ${JSON.stringify(after)}`);
      await trafficWorks(s, 'after the repair');
      await diffClean(s);
    })));
  }
}

async function waitForRepairs(s: Setup, count: number, withinMs: number): Promise<LogLine[]> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const found = logLines(s.kproxy).filter((l) => l.msg === repairedMsg);
    if (found.length >= count || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test(titled('nftables: after a flushed chain is repaired, a deleted endpoint element is still seen and repaired (nft monitor forgets a map when a rule using it goes)'), (t) => limit(() => withKproxy(t, 'nftables', periodS, async (s) => {
  await s.sh('nft', ['flush', 'chain', 'ip', 'kproxy', 'cluster-3']);
  const first = await waitForRepairs(s, 1, periodS * 1000 + slackMs);
  t.is(first.length, 1, 'the flush is repaired');
  await new Promise((r) => setTimeout(r, 300));
  await s.sh('nft', ['delete', 'element', 'ip', 'kproxy', 'endpoints-tcp', '{ 10.96.0.10 . 80 . 2 }']);
  const both = await waitForRepairs(s, 2, periodS * 1000 + slackMs);
  t.is(both.length, 2, 'the element is repaired too');
  t.deepEqual(both[1]?.repaired, ['element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 2 }']);
  await trafficWorks(s, 'after both repairs');
  await diffClean(s);
})));

for (const kind of ['iptables-nft', 'nftables'] as const) {
  test(titled(`${kind}: kproxy in a PID namespace of its own (a pod without hostPID) tells its own changes from others' by its tools' names`), (t) => limit(() => withKproxy(t, kind, periodS, async (s) => {
    for (let i = 0; i < 4; i++) {
      const n = await s.kproxy.syncCount();
      await writeAtomically(s.sourceFile, clusterYaml(nodeSpec, [{ ...services[0], endpoints: eps(i % 2 ? [1, 2, 3] : [1, 2]) }, ...services.slice(1)]));
      await s.kproxy.waitForSyncAfter(n);
    }
    t.deepEqual(await repairsTotal(s.kproxy), {}, 'its own syncs are not repairs');
    const t0 = Date.now();
    if (kind === 'nftables') await s.sh('nft', ['flush', 'chain', 'ip', 'kproxy', 'cluster-2']);
    else await s.sh(ipt(s), ['-w', '-t', 'nat', '-F', await webChain(s)]);
    const [line] = await waitForRepairs(s, 1, periodS * 1000 + slackMs);
    t.truthy(line, 'repaired');
    t.log(`${kind} in a PID namespace: repaired ${line ? line.time - t0 : NaN} ms after the change: ${JSON.stringify(line?.repaired)}`);
    t.deepEqual(await repairsTotal(s.kproxy), { chain: 1 }, 'one chain, not a full sync');
    t.false(/did not start for its own changes|names processes kproxy did not start/.test(s.kproxy.logs()), 'attribution worked');
    await diffClean(s);
  }, ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child'])));
}

for (const kind of eventKinds(['iptables-nft', 'iptables-legacy', 'nftables'])) {
  test(titled(`${kind}: many syncs of kproxy's own, with periodic checks between them, are never counted as repairs`), (t) => limit(() => withKproxy(t, kind, 1, async (s) => {
    const first = await s.kproxy.syncCount();
    for (let i = 0; i < 16; i++) {
      const changed: ServiceSpec[] = [
        { ...services[0], endpoints: eps(i % 2 ? [1, 2, 3] : [1, 3]) },
        services[1],
        ...(i % 4 < 2 ? [{ name: `extra${i % 3}`, clusterIP: `10.96.1.${i % 3}`, ports: [{ name: 'http', port: 80, targetPort: 8080 }], endpoints: eps([2]) }] : []),
        services[2],
      ];
      const n = await s.kproxy.syncCount();
      await writeAtomically(s.sourceFile, clusterYaml(nodeSpec, changed));
      await s.kproxy.waitForSyncAfter(n);
      if (i % 5 === 4) await new Promise((r) => setTimeout(r, 1200)); // a periodic check or two
    }
    // The last state is the first one again; a few more periodic checks.
    await new Promise((r) => setTimeout(r, 2500));
    const syncs = await s.kproxy.syncCount();
    t.true(syncs - first >= 16, `${syncs - first} syncs`);
    const text = await s.kproxy.metrics();
    t.regex(text, /^# HELP kubeproxy_sync_proxy_rules_repairs_total /m, 'kproxy exports a repair counter');
    t.deepEqual(await repairsTotal(s.kproxy), {}, 'no repair counted');
    const odd = logLines(s.kproxy).filter((l) => l.msg === repairedMsg || /behind kproxy/.test(l.msg));
    t.deepEqual(odd, [], 'no repair logged');
    await trafficWorks(s, 'at the end');
    await diffClean(s);
  })));
}
