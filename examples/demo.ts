// The kproxy demo: a node, three backend pods and a client as network
// namespaces; kproxy runs in the node namespace on examples/cluster.yaml.
// Shows how connections spread, the rules, and traffic moving when an
// endpoint is removed from the file. Everything is removed at the end.
//
//   node examples/demo.ts [--mode iptables|nftables]   (examples/demo.sh installs the tools first)
//   node examples/demo.ts --cleanup-only               (remove what an interrupted demo left)
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import type { ProxyMode } from '../modes/registry.ts';
import { addresses, createSandbox, requireKernelPrerequisites, sweepLeftovers, type Sandbox } from '../test/helpers/netns.ts';
import { connectMany, startBackends, type ClientResult } from '../test/helpers/traffic.ts';
import { runKproxy, startKproxy, type KproxyProcess } from '../test/helpers/kproxy-process.ts';
import { writeAtomically } from '../test/e2e/cluster.ts';

const prefix = 'kpdemo';
const clusterFile = fileURLToPath(new URL('./cluster.yaml', import.meta.url));

function parseMode(argv: readonly string[]): ProxyMode {
  const i = argv.indexOf('--mode');
  const mode = i >= 0 ? argv[i + 1] : 'iptables';
  if (mode !== 'iptables' && mode !== 'nftables') throw new Error(`--mode must be iptables or nftables, not ${mode}`);
  return mode;
}

const heading = (s: string) => console.log(`\n== ${s}`);

function printSpread(what: string, r: ClientResult, pods: Sandbox['pods']): void {
  console.log(`${what}: ${r.answered}/${r.attempts} answered, ${r.refused} refused, ${r.timedOut} timed out`);
  for (const p of pods) {
    const n = r.byBackend[p.name] ?? 0;
    const pct = r.answered ? (100 * n) / r.answered : 0;
    console.log(`  ${p.name} ${p.ip.padEnd(12)} ${String(n).padStart(4)}  ${pct.toFixed(1).padStart(5)}%  ${'#'.repeat(Math.round(pct / 2))}`);
  }
}

/** Removes endpoint `ip` from every EndpointSlice in the YAML text. */
function withoutEndpoint(text: string, ip: string): string {
  const docs = [parseAllDocuments(text)].flat();
  return docs.map((doc) => {
    const o = doc.toJS() as { kind?: string; endpoints?: { addresses: string[] }[] };
    if (o.kind === 'EndpointSlice' && o.endpoints) o.endpoints = o.endpoints.filter((e) => !e.addresses.includes(ip));
    return stringify(o);
  }).join('---\n');
}

async function demo(mode: ProxyMode): Promise<void> {
  requireKernelPrerequisites();
  heading(`sandbox: node, client and three pods as network namespaces (kproxy in ${mode} mode)`);
  const sandbox = await createSandbox({ prefix });
  let kproxy: KproxyProcess | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-demo-'));
  const cleanup = async () => {
    await kproxy?.stop('SIGKILL');
    await sandbox.destroy();
    await rm(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
  try {
    console.log(`node ${sandbox.node}: ${addresses.nodeIP} (client side), ${addresses.bridgeIP} (pod bridge)`);
    console.log(`client ${sandbox.client}: ${addresses.clientIP}`);
    for (const p of sandbox.pods) console.log(`${p.name} ${p.ns}: ${p.ip}, answers TCP :8080 with "${p.name}"`);
    await startBackends(sandbox.pods, { tcp: [8080] });

    const file = join(dir, 'cluster.yaml');
    await copyFile(clusterFile, file);
    heading(`kproxy --proxy-mode ${mode} --source-file ${file} (a copy of examples/cluster.yaml)`);
    kproxy = await startKproxy({ sandbox, mode, sourceFile: file });
    console.log(`running as pid ${kproxy.pid}, healthy, ${await kproxy.syncCount()} sync(s) done`);

    heading('300 connections from the client to the ClusterIP 10.96.0.10:80 (Service demo/web)');
    printSpread('ClusterIP', await connectMany(sandbox.client, '10.96.0.10', 80, { count: 300 }), sandbox.pods);
    heading(`300 connections from the client to the NodePort ${addresses.nodeIP}:30080 (Service demo/web-nodeport)`);
    printSpread('NodePort', await connectMany(sandbox.client, addresses.nodeIP, 30080, { count: 300 }), sandbox.pods);

    heading('the rules kproxy holds in the node namespace (kproxy dump --live)');
    const dump = await runKproxy(sandbox, ['dump', '--live', '--proxy-mode', mode, '--source-file', file, '--hostname-override', 'node-a']);
    console.log(dump.code === 0 ? dump.stdout : `dump failed (${dump.code}): ${dump.stderr}`);

    heading(`editing the file: endpoint ${sandbox.pods[2].ip} (${sandbox.pods[2].name}) removed from both EndpointSlices`);
    const before = await kproxy.syncCount();
    const started = Date.now();
    await writeAtomically(file, withoutEndpoint(await readFile(file, 'utf8'), sandbox.pods[2].ip));
    await kproxy.waitForSyncAfter(before);
    console.log(`kproxy synced ${Date.now() - started} ms after the edit`);
    printSpread('ClusterIP', await connectMany(sandbox.client, '10.96.0.10', 80, { count: 300 }), sandbox.pods);
    printSpread('NodePort', await connectMany(sandbox.client, addresses.nodeIP, 30080, { count: 300 }), sandbox.pods);
  } finally {
    heading('removing the sandbox');
    await cleanup();
  }
}

const argv = process.argv.slice(2);
if (argv.includes('--cleanup-only')) {
  const removed = await sweepLeftovers(prefix);
  if (removed.length) console.log(`removed leftover namespaces: ${removed.join(' ')}`);
} else {
  await demo(parseMode(argv));
}
