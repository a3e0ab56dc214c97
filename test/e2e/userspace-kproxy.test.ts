// The real kproxy process in userspace mode, in network namespaces, with
// real traffic, driven through its YAML file source (and once through the
// list/watch test API server) as an operator would run it: retry past a pod
// that stopped listening, passive health back-off and return, draining,
// half-close, a slow reader, UDP from many client ports, a restart without
// a failed connection, explain / dump --live / diff / metrics against the
// running process, drift repaired, SCTP refused with a Warning Event, and
// 10,000 Services loaded.
import test, { type ExecutionContext } from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addresses, createSandbox, type Sandbox } from '../helpers/netns.ts';
import { kproxyArgs, metricsPort, runKproxy, startKproxy, type KproxyProcess } from '../helpers/kproxy-process.ts';
import { connectMany, httpGet, nodeIn, startContinuousClient, withTimeout, type ClientResult } from '../helpers/traffic.ts';
import { endLongClient, halfCloseClient, lineOf, longClient, runClient, slowReader, startPod, type PodServer } from '../helpers/userspace-pods.ts';
import { TestApiServer, type KubeObject } from '../helpers/apiserver.ts';
import { clusterYaml, nodeObject, serviceObject, sliceObject, writeAtomically, type ServiceSpec } from './cluster.ts';
import { kubeconfigInNamespace } from './api-relay.ts';

const nodeSpec = { name: 'node-a', ip: addresses.nodeIP };
const eps = (pods: readonly number[]) => pods.map((i) => ({ ip: addresses.podIP(i), nodeName: 'node-a' }));
const svc = (name: string, clusterIP: string, port: number, targetPort: number, pods: readonly number[], extra: Partial<ServiceSpec> = {}): ServiceSpec => ({
  name, clusterIP, ports: [{ name: 'p', port, targetPort, ...(extra.ports?.[0] ?? {}) }], endpoints: eps(pods), ...extra,
});
const show = (r: ClientResult): string => JSON.stringify({ ...r, failures: r.failures.slice(0, 10) });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Lab {
  readonly sb: Sandbox;
  readonly pods: PodServer[];
  readonly kproxy: KproxyProcess;
  readonly file: string;
  /** Rewrites the source file and waits for the sync. */
  apply(services: readonly ServiceSpec[]): Promise<void>;
  /** Runs a kproxy command (explain, dump, diff) in the node namespace with the same source and flags. */
  command(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Prometheus text of the running kproxy. */
  metrics(): Promise<string>;
}

async function lab(t: ExecutionContext, services: readonly ServiceSpec[], extraArgs: readonly string[] = [], opts: { pods?: number; readyTimeoutMs?: number } = {}): Promise<Lab> {
  const sb = await createSandbox({ prefix: 'kpuk', pods: opts.pods ?? 3 });
  t.teardown(() => sb.destroy());
  const pods = await Promise.all(sb.pods.map(startPod));
  t.teardown(() => { for (const p of pods) p.stop(); });
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-us-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  await writeAtomically(file, clusterYaml(nodeSpec, services));
  const kproxy = await startKproxy({ sandbox: sb, mode: 'userspace', sourceFile: file, extraArgs, readyTimeoutMs: opts.readyTimeoutMs });
  t.teardown(async () => {
    if (!t.passed) t.log(kproxy.logs().slice(-4000));
    await kproxy.stop('SIGKILL');
  });
  const args = kproxyArgs({ sandbox: sb, mode: 'userspace', sourceFile: file, extraArgs });
  return {
    sb, pods, kproxy, file,
    async apply(next) {
      const before = await syncCountSoon(kproxy);
      await writeAtomically(file, clusterYaml(nodeSpec, next));
      await kproxy.waitForSyncAfter(before);
    },
    // Commands take the run's flags but not its servers' addresses.
    command: (cmd) => runKproxy(sb, [...cmd, ...args.filter((a, i) => !/bind-address$/.test(a) && !/bind-address$/.test(args[i - 1] ?? ''))]),
    async metrics() {
      const r = await httpGet(sb.node, `http://127.0.0.1:${metricsPort}/metrics`);
      if (r.status !== 200) throw new Error(`metrics: ${r.status} ${r.error ?? ''}`);
      return r.body;
    },
  };
}

/** Completed syncs; a busy kproxy (a large table) may answer one scrape late. */
async function syncCountSoon(k: KproxyProcess, timeoutMs = 30_000): Promise<number> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await k.syncCount();
    } catch (e) {
      if (Date.now() > until) throw e;
      await sleep(200);
    }
  }
}

/** The sum of a metric's samples whose labels include `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** The forwarder's worker processes of a kproxy (its children running worker.ts). */
function workerPids(parent: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent && /worker\.ts/.test(readFileSync(`/proc/${d}/cmdline`, 'utf8'))) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const VIP = '10.96.0.10';

test.serial('retry: a pod that stopped listening while still in the EndpointSlice: 300 connections, none fails, none goes to it after the first failures', async (t) => {
  // Skipped for a minute once ejected, so the second round cannot meet a probe connect.
  const { sb, pods, metrics, command } = await lab(t, [svc('web', VIP, 80, 8080, [1, 2, 3])], ['--userspace-eject-time', '60s']);
  pods[1].stop();
  const r = await connectMany(sb.client, VIP, 80, { count: 300, concurrency: 10, timeoutMs: 5000 });
  t.is(r.answered, 300, show(r));
  t.deepEqual(Object.keys(r.byBackend).sort(), ['pod-1', 'pod-3']);
  const m = await metrics();
  const labels = { service_port: 'default/web:p', protocol: 'TCP' };
  const failures = sample(m, 'kubeproxy_userspace_connect_failures_total', labels);
  // Each of the two workers learns on its own, with up to 10 connections in flight when it does.
  t.true(failures >= 3 && failures <= 2 * (3 + 10), `connect failures ${failures}`);
  t.is(sample(m, 'kubeproxy_userspace_connect_retries_total', labels), failures);
  t.is(sample(m, 'kubeproxy_userspace_ejected_endpoints', labels), 1);
  const again = await connectMany(sb.client, VIP, 80, { count: 300, concurrency: 10, timeoutMs: 5000 });
  t.is(again.answered, 300, show(again));
  t.is(sample(await metrics(), 'kubeproxy_userspace_connect_failures_total', labels), failures, 'not one more connect went to the dead pod');
  const explain = await command(['explain', 'default/web']);
  t.is(explain.code, 0, explain.stderr);
  t.regex(explain.stdout, new RegExp(`${addresses.podIP(2).replace(/\./g, '\\.')}:8080\\s+0 open · skipped for \\d+ s more: its connects failed \\(ECONNREFUSED\\)`), explain.stdout);
});

test.serial('passive health: a failing endpoint is skipped for its back-off, tried again after it, and takes traffic once it is back', async (t) => {
  // One worker and long connect timeouts: round robin's spread is exact even on a loaded machine.
  // Skipped for 4 s: long enough to be seen skipped on a loaded machine (explain shows it in the retry test).
  const { sb, pods, metrics } = await lab(t, [svc('web', VIP, 80, 8080, [1, 2, 3])], [
    '--userspace-workers', '1', '--userspace-eject-after-failures', '2', '--userspace-eject-time', '4s', '--userspace-max-eject-time', '4s',
    '--userspace-connect-timeouts', '5s,5s,5s',
  ]);
  pods[1].stop();
  const t0 = Date.now();
  const during = await connectMany(sb.client, VIP, 80, { count: 60, concurrency: 4 });
  t.is(during.answered, 60, show(during));
  t.is(during.byBackend['pod-2'] ?? 0, 0);
  t.is(sample(await metrics(), 'kubeproxy_userspace_ejected_endpoints', { service_port: 'default/web:p' }), 1);
  pods[1] = await startPod(sb.pods[1]);
  // Its back-off ends about 4 s after its last failure: the gauge says when.
  const ejected = async () => sample(await metrics(), 'kubeproxy_userspace_ejected_endpoints', { service_port: 'default/web:p' });
  for (const until = Date.now() + 15_000; await ejected() > 0 && Date.now() < until;) await sleep(200);
  t.true(Date.now() - t0 >= 3500, 'skipped for its back-off');
  const after = await connectMany(sb.client, VIP, 80, { count: 60, concurrency: 4 });
  t.is(after.answered, 60, show(after));
  t.is(after.byBackend['pod-2'], 20, JSON.stringify(after.byBackend));
  t.is(sample(await metrics(), 'kubeproxy_userspace_ejected_endpoints', { service_port: 'default/web:p' }), 0);
});

test.serial('drain: a long-lived connection to an endpoint removed from the EndpointSlice goes on; new connections avoid it', async (t) => {
  const echo = (pods: number[]) => svc('echo', '10.96.0.11', 81, 8081, pods);
  const web = (pods: number[]) => svc('web', VIP, 80, 8080, pods);
  const { sb, apply, command } = await lab(t, [echo([1]), web([1, 2])]);
  const child = nodeIn(sb.client, longClient, { host: '10.96.0.11', port: 81 });
  t.is(await withTimeout(lineOf(child), 30_000, 'long client'), 'greeted');
  await sleep(500);
  await apply([echo([2]), web([2])]);
  const fresh = await connectMany(sb.client, VIP, 80, { count: 40 });
  t.deepEqual(fresh.byBackend, { 'pod-2': 40 }, show(fresh));
  const explain = await command(['explain', 'default/echo']);
  t.regex(explain.stdout, new RegExp(`${addresses.podIP(1).replace(/\./g, '\\.')}:8081\\s+1 open · removed from the EndpointSlice: draining`), explain.stdout);
  await sleep(1000);
  const r = await endLongClient(child);
  t.is(r.greeting, 'pod-1');
  t.true(r.pings >= 15, `${r.pings} pings`);
  t.true(r.echoes >= r.pings - 1, `${r.echoes} echoes of ${r.pings}`);
  t.is(r.error, '');
  t.false(r.closed, 'still open when the client ended it');
});

test.serial('half-close, a slow reader and UDP from many client ports, through kproxy; another mode\'s table written back after the first sync goes again', async (t) => {
  const { sb, kproxy, metrics } = await lab(t, [
    svc('half', '10.96.0.12', 82, 8082, [1, 2, 3]),
    svc('stream', '10.96.0.13', 83, 8083, [1]),
    svc('dns', '10.96.0.53', 53, 8080, [1, 2, 3], { ports: [{ name: 'p', port: 53, targetPort: 8080, protocol: 'UDP' }] }),
  ], ['--userspace-workers', '1', '--iptables-sync-period', '5s']);
  // An old kproxy in nftables mode, still running beside this one (a surging rolling update), writes its table back
  // once this one has removed other modes' rules after its first sync.
  for (const until = Date.now() + 10_000; !/other modes' rules removed/.test(kproxy.logs()) && Date.now() < until;) await sleep(50);
  t.regex(kproxy.logs(), /other modes' rules removed/);
  await sb.exec(sb.node, 'nft', ['add', 'table', 'ip', 'kproxy']);
  t.regex((await sb.exec(sb.node, 'nft', ['list', 'tables'])).stdout, /table ip kproxy\b/);

  // Half-close: the client shuts its sending side and still gets the whole answer.
  const sizes = [1, 1000, 2_000_000];
  const half = await Promise.all(sizes.map((bytes) => runClient<{ head: string; length: number; error: string }>(sb.client, halfCloseClient, { host: '10.96.0.12', port: 82, bytes })));
  for (const [i, bytes] of sizes.entries()) {
    t.is(half[i].error, '');
    t.is(half[i].head, `got ${bytes}`);
    t.is(half[i].length, `got ${bytes}\n`.length + (1 << 20));
  }

  // A slow reader: the pod would send 256 MiB to each of four; the worker holds a bounded amount.
  const [worker] = workerPids(kproxy.pid);
  t.truthy(worker, 'one worker process');
  const before = rssKiB(worker);
  const readers = Array.from({ length: 4 }, () => runClient<{ read: number }>(sb.client, slowReader, { host: '10.96.0.13', port: 83, ms: 6000 }));
  await sleep(4000);
  const during = rssKiB(worker);
  const reads = await Promise.all(readers);
  t.log(`worker RSS ${before} KiB before, ${during} KiB with 4 slow readers offered 256 MiB each; they read ${reads.map((r) => (r.read / 1048576).toFixed(1)).join(', ')} MiB`);
  for (const r of reads) t.true(r.read > 0 && r.read < 64 << 20, `read ${r.read}`);
  t.true(during - before < 64 * 1024, `worker RSS grew ${during - before} KiB`);

  // UDP: one flow per client port, each answered from the Service address (the client's sockets are connected to it).
  const udp = await connectMany(sb.client, '10.96.0.53', 53, { protocol: 'udp', count: 600, concurrency: 60, timeoutMs: 3000 });
  t.is(udp.answered, 600, show(udp));
  for (const p of ['pod-1', 'pod-2', 'pod-3']) t.true((udp.byBackend[p] ?? 0) > 120, JSON.stringify(udp.byBackend));
  const flows = sample(await metrics(), 'kubeproxy_userspace_connections_total', { service_port: 'default/dns:p', protocol: 'UDP' });
  t.true(flows >= 580 && flows <= 600, `${flows} flows`);

  // Two sync periods after the first sync, other modes' state is removed once more.
  const tables = async () => (await sb.exec(sb.node, 'nft', ['list', 'tables'])).stdout;
  for (const until = Date.now() + 15_000; /table ip kproxy\b/.test(await tables()) && Date.now() < until;) await sleep(250);
  t.false(/table ip kproxy\b/.test(await tables()), 'the nftables mode\'s table is gone again');
});

test.serial('a restart without a failed connection: SIGTERM, a new kproxy a second later, the old one hands over and drains', async (t) => {
  const echo = svc('echo', '10.96.0.11', 81, 8081, [1]);
  const { sb, kproxy, file } = await lab(t, [svc('web', VIP, 80, 8080, [1, 2, 3]), echo]);
  const long = nodeIn(sb.client, longClient, { host: '10.96.0.11', port: 81 });
  t.is(await withTimeout(lineOf(long), 30_000, 'long client'), 'greeted');
  const client = await startContinuousClient(sb.client, VIP, 80, { intervalMs: 5, timeoutMs: 3000 });
  await sleep(500);
  const exiting = kproxy.stop('SIGTERM', 60_000);
  await sleep(1000);
  const next = await startKproxy({ sandbox: sb, mode: 'userspace', sourceFile: file });
  t.teardown(() => next.stop('SIGKILL').then(() => undefined));
  await sleep(1500);
  const r = await client.stop();
  // The old one's open connection went on through the handover.
  const l = await endLongClient(long);
  const exit = await exiting;
  t.log(`${r.attempts} connections across the restart; the long connection: ${JSON.stringify(l)}`);
  t.true(r.attempts > 200, `${r.attempts} attempts`);
  t.deepEqual(r.failures, [], show(r));
  t.is(r.answered, r.attempts);
  t.is(l.error, '');
  t.true(l.echoes >= l.pings - 1, `${l.echoes} echoes of ${l.pings}`);
  t.is(exit.code, 0);
  t.regex(kproxy.logs(), /a successor listens on every address: handing over/);
  const served = await connectMany(sb.client, VIP, 80, { count: 30 });
  t.is(served.answered, 30, 'the successor serves');
});

test.serial('explain, dump --live, diff and metrics read the running kproxy; a removed Service address is put back (alone) within the sync period', async (t) => {
  const web = svc('web', VIP, 80, 8080, [1, 2, 3], { type: 'NodePort', ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: 30080 }] });
  const { sb, command, metrics, kproxy } = await lab(t, [web], ['--iptables-sync-period', '2s']);
  const r = await connectMany(sb.client, addresses.nodeIP, 30080, { count: 30 });
  t.is(r.answered, 30, show(r));

  const explain = await command(['explain', 'default/web']);
  t.is(explain.code, 0, explain.stderr);
  t.regex(explain.stdout, /userspace rules of this port \(\d+ lines\):/);
  t.regex(explain.stdout, /listen TCP \*:30080 "default\/web:p" rr -> /);
  t.regex(explain.stdout, /live state \(kproxy pid \d+, 2 workers, relay native\):/);
  t.regex(explain.stdout, new RegExp(`TCP ${addresses.nodeIP.replace(/\./g, '\\.')}:30080: accepting`));

  const live = await command(['dump', '--live']);
  t.is(live.code, 0, live.stderr);
  t.regex(live.stdout, /^address 10\.96\.0\.10$/m);
  t.regex(live.stdout, new RegExp(`^listen TCP ${addresses.nodeIP.replace(/\./g, '\\.')}:30080 "default/web:p" rr -> `, 'm'));
  const diff = await command(['diff']);
  t.is(diff.code, 0, `${diff.stdout}\n${diff.stderr}`);
  t.regex(diff.stdout, /kernel rules match the desired userspace rules/);

  const m = await metrics();
  t.true(sample(m, 'kubeproxy_userspace_connections_total', { service_port: 'default/web:p', protocol: 'TCP' }) >= 30);
  t.true(sample(m, 'kubeproxy_userspace_bytes_total', { service_port: 'default/web:p', direction: 'to_client' }) > 0);
  t.is(sample(m, 'kubeproxy_sync_proxy_rules_userspace_total', { table: 'ipv4 addresses' }), 1);

  // Someone adds an address with kproxy's mark: diff says so (kproxy's own check looks for what is missing).
  const device = /kproxy0/.test((await sb.exec(sb.node, 'ip', ['-o', 'address', 'show'])).stdout) ? 'kproxy0' : 'lo';
  await sb.exec(sb.node, 'ip', ['address', 'add', '10.96.9.9/32', 'dev', device, 'metric', '7717']);
  const drifted = await command(['diff']);
  t.is(drifted.code, 1, drifted.stdout);
  t.deepEqual(drifted.stdout.split('\n').filter((l) => /^[-+]/.test(l) && !/^(---|\+\+\+) /.test(l)), ['+address 10.96.9.9']);
  // Someone removes the Service address: kproxy notices within its sync period and puts it back.
  await sb.exec(sb.node, 'ip', ['address', 'del', `${VIP}/32`, 'dev', device]);
  const held = async () => (await sb.exec(sb.node, 'ip', ['-o', 'address', 'show'])).stdout;
  const until = Date.now() + 10_000;
  while (!(await held()).includes(`${VIP}/32`) && Date.now() < until) await sleep(200);
  const back = await connectMany(sb.client, VIP, 80, { count: 20 });
  t.is(back.answered, 20, `the address is back and served: ${show(back)}`);
  // kproxy logs the repair once its sync has finished, which can be after the address is back.
  const repairedLine = /"repaired":\["address 10\.96\.0\.10"\].*"msg":"repaired kernel rules someone else changed"/;
  for (const until = Date.now() + 10_000; !repairedLine.test(kproxy.logs()) && Date.now() < until;) await sleep(100);
  t.regex(kproxy.logs(), repairedLine);
  t.is(sample(await metrics(), 'kubeproxy_sync_proxy_rules_repairs_total', { mode: 'userspace', what: 'address' }), 1);
  // The stray address is the one thing a targeted repair leaves: the next full sync removes it.
  t.true((await held()).includes('10.96.9.9/32'));
});

test.serial('an SCTP port is not served: logged once, one Warning Event, counted; the Service\'s TCP port works (API server source)', async (t) => {
  const sb = await createSandbox({ prefix: 'kpuk' });
  t.teardown(() => sb.destroy());
  const pods = await Promise.all(sb.pods.map(startPod));
  t.teardown(() => { for (const p of pods) p.stop(); });
  const api = await TestApiServer.start();
  t.teardown(() => api.close());
  const mixed: ServiceSpec = {
    name: 'mixed', clusterIP: VIP, endpoints: eps([1, 2, 3]),
    ports: [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'sig', port: 9999, targetPort: 9999, protocol: 'SCTP' }],
  };
  api.upsert(nodeObject(nodeSpec) as unknown as KubeObject);
  api.upsert(serviceObject(mixed) as unknown as KubeObject);
  api.upsert(sliceObject(mixed) as unknown as KubeObject);
  const config = await kubeconfigInNamespace(api, sb.node);
  t.teardown(() => config.close());
  const kubeconfig = config.path;
  const kproxy = await startKproxy({ sandbox: sb, mode: 'userspace', kubeconfig });
  t.teardown(() => kproxy.stop('SIGKILL').then(() => undefined));

  const r = await connectMany(sb.client, VIP, 80, { count: 30 });
  t.is(r.answered, 30, show(r));
  for (const until = Date.now() + 5000; api.events.length === 0 && Date.now() < until;) await sleep(50);
  const events = api.events.map((e) => e.object as KubeObject & { type?: string; reason?: string; message?: string; involvedObject?: { name?: string } });
  t.is(events.length, 1, JSON.stringify(events));
  t.like(events[0], { type: 'Warning', reason: 'ServicePortRefused', involvedObject: { name: 'mixed' } });
  t.regex(events[0]?.message ?? '', /port sig\/SCTP: the userspace mode does not serve SCTP/);
  // A later change of the Service's endpoints says nothing more.
  const before = await kproxy.syncCount();
  api.upsert(sliceObject({ ...mixed, endpoints: eps([1, 2]) }) as unknown as KubeObject);
  await kproxy.waitForSyncAfter(before);
  await sleep(500);
  t.is(api.events.length, 1);
  t.is(kproxy.logs().split('\n').filter((l) => l.includes('does not serve SCTP')).length, 1, 'logged once');
  const m = (await httpGet(sb.node, `http://127.0.0.1:${metricsPort}/metrics`)).body;
  t.is(sample(m, 'kproxy_objects_refused_total', { action: 'refuse' }), 1);
  t.false((await sb.exec(sb.node, 'ss', ['-Hlnt'])).stdout.includes(':9999'), 'nothing listens for the SCTP port');
});

test.serial('10,000 Services × 2 ports loaded: start-up time and memory, the last Service answers, a change applies', async (t) => {
  const n = 10_000;
  const services: ServiceSpec[] = Array.from({ length: n }, (_, i) => ({
    name: `svc-${i}`, clusterIP: `10.97.${i >> 8}.${i & 255}`,
    ports: [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'https', port: 443, targetPort: 8080 }],
    // Three endpoints each (addresses nothing answers), but the last Service: the live pod.
    endpoints: i === n - 1 ? eps([1]) : [0, 1, 2].map((j) => ({ ip: `10.181.${j}.${i & 255}`, nodeName: 'node-b' })),
  }));
  const t0 = Date.now();
  const { sb, kproxy, apply } = await lab(t, services, [], { pods: 1, readyTimeoutMs: 240_000 });
  const readyMs = Date.now() - t0;
  const firstSync = /"ms":(\d+),"services":(\d+),"msg":"first sync done"/.exec(kproxy.logs());
  const workers = workerPids(kproxy.pid);
  const supervisor = rssKiB(kproxy.pid);
  const workerKiB = workers.map(rssKiB);
  const last = await connectMany(sb.client, services[n - 1].clusterIP, 443, { count: 5, concurrency: 1, timeoutMs: 10_000 });
  t.is(last.answered, 5, show(last));
  const listeners = Number((await sb.exec(sb.node, 'ss', ['-Hltn'])).stdout.split('\n').filter((l) => /\s10\.97\./.test(l)).length);
  // One endpoint change: a partial sync.
  const changed = services.map((s, i) => (i === 0 ? { ...s, endpoints: eps([1]) } : s));
  const c0 = Date.now();
  await apply(changed);
  const changeMs = Date.now() - c0;
  const first = await connectMany(sb.client, services[0].clusterIP, 80, { count: 5, concurrency: 1 });
  t.is(first.answered, 5, show(first));
  const m = (await httpGet(sb.node, `http://127.0.0.1:${metricsPort}/metrics`, { timeoutMs: 30_000 })).body;
  const partialMs = 1000 * sample(m, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_sum') / Math.max(1, sample(m, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count'));
  t.log(`10,000 Services × 2 ports (20,000 listeners, 10,000 addresses): ready ${readyMs} ms after start (first sync ${firstSync?.[1]} ms), ` +
    `RSS supervisor ${(supervisor / 1024).toFixed(0)} MiB + workers ${workerKiB.map((k) => (k / 1024).toFixed(0)).join(' + ')} MiB, ` +
    `listening sockets ${listeners}, an endpoint change ${changeMs} ms from the file's rewrite (its partial sync ${partialMs.toFixed(0)} ms)`);
  t.is(Number(firstSync?.[2]), 2 * n);
  t.true(listeners >= 2 * n, `${listeners} listening sockets`);
});
