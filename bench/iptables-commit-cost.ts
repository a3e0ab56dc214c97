// What one small `iptables-restore --noflush` commit costs against a large
// loaded table, by batch shape: separates process start and parsing from the
// kernel's re-validation of the chain graph.
//
//   node bench/iptables-commit-cost.ts [--services 10000] [--endpoints 10] [--variant nft|legacy] [--runs 20]
//
// Loads kproxy's full batch for the Services into a fresh network namespace,
// then times each shape `--runs` times (wall ms, and the tool's user and
// system CPU from this process's waited-for children; the kernel work of a
// commit runs in the tool's system time). Then repeats the DNAT shape with
// the jumps from PREROUTING/OUTPUT removed (the graph unreachable from any
// built-in chain, or from one) to show what the walk costs. Needs root, iptables, ipset, iproute2.
import { spawn } from 'node:child_process';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { flagValue } from './args.ts';
import { childrenCpu, endpoint, ipv4, pct, service as benchService, withNetns } from './fixtures.ts';
import { netnsExec, toolPath } from '../lib/exec.ts';
import { svcChain } from '../modes/iptables/names.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, type ServicePortState } from '../proxy/model.ts';
import { syncBackend } from '../modes/sync.ts';

const argv = process.argv.slice(2);
const get = (flag: string, d: string): string => flagValue(argv, flag) ?? d;
const n = Number(get('--services', '10000'));
const e = Number(get('--endpoints', '10'));
const runs = Number(get('--runs', '20'));
const variant = get('--variant', 'nft');
if (variant !== 'nft' && variant !== 'legacy') throw new Error('--variant must be nft or legacy');
if (process.getuid?.() !== 0) throw new Error('creates a network namespace: run as root');

const service = (i: number): ServicePortState =>
  benchService(i, Array.from({ length: e }, (_, j) => endpoint(ipv4((10 << 24) + i * (e + 1) + j + 1))), ipv4((172 << 24) + (16 << 16) + i + 1));

function restore(ns: string, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(toolPath('ip'), ['netns', 'exec', ns, toolPath(`iptables-${variant}-restore`), '--noflush', '-w'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (b: Buffer) => (err += b.toString()));
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`restore exit ${code}: ${err.slice(0, 300)}\n${text}`))));
    c.stdin.end(text);
  });
}

async function measure(ns: string, label: string, batch: (k: number) => string): Promise<void> {
  const wall: number[] = [];
  const c0 = childrenCpu();
  for (let k = 0; k < runs; k++) {
    const t0 = performance.now();
    await restore(ns, batch(k));
    wall.push(performance.now() - t0);
  }
  const c1 = childrenCpu();
  console.log(`| ${label} | ${pct(wall, 50).toFixed(1)} | ${((c1.user - c0.user) / runs).toFixed(1)} | ${((c1.system - c0.system) / runs).toFixed(1)} |`);
}

await withNetns(async (ns) => {
  process.env.KPROXY_IPTABLES_VARIANT = variant;
  const b = new IptablesBackend({ families: [4], clusterCIDRs: ['10.0.0.0/8'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: netnsExec(ns) }, silentLogger());
  const services = new Map<string, ServicePortState>();
  for (let i = 0; i < n; i++) {
    const s = service(i);
    services.set(s.key, s);
  }
  const st = { nodeName: 'bench', nodeIPs: ['192.168.0.2'], services };
  const t0 = performance.now();
  const r = await syncBackend(b, st, fullChanges(st));
  if (!r.ok) throw r.error;
  console.log(`${variant}: loaded ${n} Services × ${e} endpoints (${r.size} lines) in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${runs} runs per shape`);
  console.log('\n| batch (nat table, --noflush) | wall p50 ms | tool user ms | tool system ms |\n|---|---|---|---|');

  // A Service in the middle of the table.
  const mid = Math.floor(n / 2);
  const svc = svcChain(`bench/svc${mid}:http`, 'TCP');
  const dnat = (k: number): string => `-p tcp -m comment --comment "x -> 11.0.0.${(k % 250) + 1}:8080" -j DNAT --to-destination 11.0.0.${(k % 250) + 1}:8080`;
  const clusterIP = service(mid).clusterIP;
  const dispatch = `-d ${clusterIP}/32 -p tcp -m comment --comment "bench/svc${mid}:http cluster IP" -m tcp --dport 80 -j ${svc}`;
  // The Service chain as a partial sync rewrites it for one endpoint change.
  const svcText = (k: number): string => {
    const lines = [`-A ${svc} ! -s 10.0.0.0/8 -d ${clusterIP}/32 -p tcp -m comment --comment "bench/svc${mid}:http cluster IP" -m tcp --dport 80 -j MARK --set-xmark 0x4000/0x4000`];
    for (let j = 0; j < e; j++) {
      const ip = j === 0 ? `11.1.${k % 250}.1` : ipv4((10 << 24) + mid * (e + 1) + j + 1);
      const stat = j < e - 1 ? ` -m statistic --mode random --probability ${(1 / (e - j)).toFixed(10)}` : '';
      lines.push(`-A ${svc} -p tcp -m comment --comment "bench/svc${mid}:http -> ${ip}:8080"${stat} -j DNAT --to-destination ${ip}:8080`);
    }
    return lines.join('\n');
  };
  const nat = (body: string): string => `*nat\n${body}\nCOMMIT\n`;

  await measure(ns, 'empty (`*nat` / `COMMIT`)', () => nat(''));
  await measure(ns, 'flush a new unreferenced chain', () => nat(':KPX-TEST - [0:0]'));
  await measure(ns, '... and add a rule without target', (k) => nat(`:KPX-TEST - [0:0]\n-A KPX-TEST -d 11.0.0.${(k % 250) + 1}/32 -p tcp -m tcp --dport 80`));
  await measure(ns, '... and add a rule `-j ACCEPT`', (k) => nat(`:KPX-TEST - [0:0]\n-A KPX-TEST -d 11.0.0.${(k % 250) + 1}/32 -j ACCEPT`));
  await measure(ns, '... and add a rule `-m statistic` (no target)', () => nat(':KPX-TEST - [0:0]\n-A KPX-TEST -m statistic --mode random --probability 0.5000000000'));
  await measure(ns, '... and add a DNAT rule', (k) => nat(`:KPX-TEST - [0:0]\n-A KPX-TEST ${dnat(k)}`));
  await measure(ns, 'append a DNAT rule to a reachable KUBE-SVC chain', (k) => nat(`-A ${svc} ${dnat(k)}`));
  // The appends above left rules 0..runs-1 in the chain: delete them one per run.
  await measure(ns, 'delete a DNAT rule from a reachable KUBE-SVC chain (`-D`)', (k) => nat(`-D ${svc} ${dnat(k)}`));
  await measure(ns, 'rewrite a KUBE-SVC chain (flush + 11 rules: one endpoint changed)', (k) => nat(`:${svc} - [0:0]\n${svcText(k)}`));
  await measure(ns, '`-D` + `-I` of its KUBE-SERVICES rule (jump)', () => nat(`-D KUBE-SERVICES ${dispatch}\n-I KUBE-SERVICES ${mid + 1} ${dispatch}`));
  // Alternately remove and re-add the rule: each run changes the table.
  await measure(ns, '`-D` of a KUBE-SERVICES rule / `-I` it back at its place (alternating)', (k) => nat(k % 2 ? `-I KUBE-SERVICES ${mid + 1} ${dispatch}` : `-D KUBE-SERVICES ${dispatch}`));
  await measure(ns, '`-I KUBE-SERVICES 1` / `-D` (alternating)', (k) => nat(k % 2 ? `-D KUBE-SERVICES ${dispatch}` : `-I KUBE-SERVICES 1 ${dispatch}`));

  // Only one built-in chain jumping into the graph: is the walk per built-in chain?
  await restore(ns, nat(`-D OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`));
  await measure(ns, 'hooked from PREROUTING only: rewrite a KUBE-SVC chain (one endpoint changed)', (k) => nat(`:${svc} - [0:0]\n${svcText(k)}`));
  await restore(ns, nat(`-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`));

  // Unhook the graph from the built-in chains: the same DNAT shapes again.
  const hooks = ['PREROUTING', 'OUTPUT'].map((c) => `-D ${c} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`);
  await restore(ns, nat(hooks.join('\n')));
  await measure(ns, 'unhooked (no jump from PREROUTING/OUTPUT): add a DNAT rule to a new chain', (k) => nat(`:KPX-TEST - [0:0]\n-A KPX-TEST ${dnat(k)}`));
  await measure(ns, 'unhooked: rewrite a KUBE-SVC chain (one endpoint changed)', (k) => nat(`:${svc} - [0:0]\n${svcText(k)}`));
  await measure(ns, 'unhooked: empty (`*nat` / `COMMIT`)', () => nat(''));
}, 'kpx-cc');
