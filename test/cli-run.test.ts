// `kproxy` running for real in a network namespace: probes, metrics,
// healthCheckNodePort servers following the file, SIGTERM leaving the rules,
// and a restart in the other mode removing them.
import test from 'ava';
import { copyFile, mkdtemp, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSandbox } from './helpers/netns.ts';
import { spawn } from 'node:child_process';
import { toolPath } from '../lib/exec.ts';
import { healthzPort, kproxyArgs, kproxyBin, metricsPort, metricValue, startKproxy } from './helpers/kproxy-process.ts';
import { httpGet } from './helpers/traffic.ts';

const fixture = fileURLToPath(new URL('./fixtures/proxy/cluster.yaml', import.meta.url));

test('run: healthy after the first sync, healthCheckNodePort follows the file, SIGTERM keeps rules, other mode cleans them', async (t) => {
  const sandbox = await createSandbox({ pods: 1, prefix: 'kpcli' });
  t.teardown(() => sandbox.destroy());
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-run-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  await copyFile(fixture, file);
  const node = sandbox.node;

  const k1 = await startKproxy({ sandbox, mode: 'iptables', sourceFile: file, hostname: 'node-a', readyTimeoutMs: 60_000 });
  t.teardown(() => k1.stop('SIGKILL'));
  const healthz = await httpGet(node, `http://127.0.0.1:${healthzPort}/healthz`);
  t.is(healthz.status, 200);
  t.like(JSON.parse(healthz.body), { nodeEligible: true });
  t.is((await httpGet(node, `http://127.0.0.1:${healthzPort}/livez`)).status, 200);
  const metrics = await httpGet(node, `http://127.0.0.1:${metricsPort}/metrics`);
  t.true((metricValue(metrics.body, 'kubeproxy_sync_proxy_rules_duration_seconds_count') ?? 0) >= 1);
  t.true((metricValue(metrics.body, 'kubeproxy_sync_proxy_rules_iptables_total') ?? 0) > 0, 'rule counts reported');
  t.is((await httpGet(node, `http://127.0.0.1:${metricsPort}/proxyMode`)).body, 'iptables');

  // default/lb has healthCheckNodePort 30256 and no endpoint on node-a.
  let hc = await httpGet(node, 'http://127.0.0.1:30256/', { wantStatus: 503, deadlineMs: 15_000 });
  t.is(hc.status, 503);
  t.deepEqual(JSON.parse(hc.body), { service: { namespace: 'default', name: 'lb' }, localEndpoints: 0, serviceProxyHealthy: true });

  // Move lb's endpoint onto node-a: the health check turns 200 after the next sync.
  const syncs = await k1.syncCount();
  const text = (await readFile(file, 'utf8')).replace('- {addresses: [10.180.1.8], nodeName: node-b}', '- {addresses: [10.180.1.8], nodeName: node-a}');
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
  await k1.waitForSyncAfter(syncs, 30_000);
  hc = await httpGet(node, 'http://127.0.0.1:30256/', { wantStatus: 200, deadlineMs: 15_000 });
  t.is(hc.status, 200, hc.body);
  t.is(JSON.parse(hc.body).localEndpoints, 1);

  // SIGTERM: clean exit, rules stay.
  t.deepEqual(await k1.stop('SIGTERM'), { code: 0, signal: null });
  const kept = await sandbox.exec(node, 'iptables-save', ['-t', 'nat']);
  t.regex(kept.stdout, /-A KUBE-SERVICES .*172\.30\.0\.41/);
  t.not((await httpGet(node, `http://127.0.0.1:${healthzPort}/healthz`)).status, 200, 'servers closed');

  // The other mode: adopts nothing of iptables, and removes it just after
  // its own first sync (in the background, so poll for it, up to 10 s).
  const k2 = await startKproxy({ sandbox, mode: 'nftables', sourceFile: file, hostname: 'node-a', readyTimeoutMs: 60_000 });
  t.teardown(() => k2.stop('SIGKILL'));
  let after = await sandbox.exec(node, 'iptables-save', ['-t', 'nat']);
  for (const end = Date.now() + 10_000; /KUBE-/.test(after.stdout) && Date.now() < end;) {
    await new Promise((r) => setTimeout(r, 200));
    after = await sandbox.exec(node, 'iptables-save', ['-t', 'nat']);
  }
  t.false(/KUBE-/.test(after.stdout), after.stdout);
  const tables = await sandbox.exec(node, 'nft', ['list', 'tables']);
  t.regex(tables.stdout, /table ip kproxy/);
  t.is((await httpGet(node, `http://127.0.0.1:${metricsPort}/proxyMode`)).body, 'nftables');
  t.deepEqual(await k2.stop('SIGINT'), { code: 0, signal: null });
});

test('an unreachable API server never removes rules; probes fail; SIGTERM during start-up exits 0', async (t) => {
  const sandbox = await createSandbox({ pods: 1, prefix: 'kpcli' });
  t.teardown(() => sandbox.destroy());
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-run-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const node = sandbox.node;
  // Rules a previous kproxy left.
  const file = join(dir, 'cluster.yaml');
  await copyFile(fixture, file);
  const k1 = await startKproxy({ sandbox, mode: 'iptables', sourceFile: file, hostname: 'node-a', readyTimeoutMs: 60_000 });
  t.deepEqual(await k1.stop('SIGTERM'), { code: 0, signal: null });
  const before = (await sandbox.exec(node, 'iptables-save', ['-t', 'nat'])).stdout;
  t.regex(before, /KUBE-SERVICES/);

  // An API server that refuses connections (nothing listens in the node namespace on this port).
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: c',
    'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
    'contexts: [{name: c, context: {cluster: c, user: u}}]', 'users: [{name: u, user: {}}]', '',
  ].join('\n'));
  const child = spawn(toolPath('ip'), ['netns', 'exec', node, process.execPath, kproxyBin,
    ...kproxyArgs({ sandbox, mode: 'nftables', kubeconfig, hostname: 'node-a' })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { logs += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { logs += s; });
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  t.teardown(() => { child.kill('SIGKILL'); });
  // The probes answer while the source keeps retrying: not ready (never
  // synced), but alive, so a liveness probe does not restart kproxy in a loop.
  const hz = await httpGet(node, `http://127.0.0.1:${healthzPort}/healthz`, { wantStatus: 503, deadlineMs: 30_000 });
  t.is(hz.status, 503, logs);
  t.is((await httpGet(node, `http://127.0.0.1:${healthzPort}/livez`)).status, 200);
  await new Promise((r) => setTimeout(r, 1500));
  // Neither this mode's cleanup of the other mode nor anything else ran: iptables rules untouched.
  t.is((await sandbox.exec(node, 'iptables-save', ['-t', 'nat'])).stdout.replace(/^#.*\n/gm, ''), before.replace(/^#.*\n/gm, ''));
  child.kill('SIGTERM');
  t.is(await exited, 0, logs);
  t.regex((await sandbox.exec(node, 'iptables-save', ['-t', 'nat'])).stdout, /KUBE-SERVICES/);
});
