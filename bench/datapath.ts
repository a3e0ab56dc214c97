// Datapath cost of the first against the last Service, both modes, one run.
//
//   node bench/datapath.ts [--services 10000] [--endpoints 10] [--seconds 4] [--variant nft|legacy] [--quick]
//
// For each mode (iptables, then nftables), in a fresh network namespace:
// the same synthetic Services × endpoints loaded through the mode's own
// backend, then real TCP connections from that (node) namespace to the
// first and the last Service, whose endpoints are listeners in a backend
// namespace. First and last are taken in the order the iptables mode
// renders nat KUBE-SERVICES, so the iptables rule walk is longest for the
// last; nftables looks both up in one map. Rates are connections/s from the
// median of interleaved 50-connection batches; CPU is the client's
// user+system µs per connection (the kernel's rule walk on connect runs in
// its system time). The iptables variant is nft unless --variant or
// KPROXY_IPTABLES_VARIANT says legacy. Needs root, iptables, nftables,
// iproute2.
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modeOf } from '../modes/registry.ts';
import { netnsExec, toolPath } from '../lib/exec.ts';
import type { Backend, ModeOptions } from '../modes/backend.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { endpoint, ip, listenerIP, measureDatapath, service, syntheticIP, vip, withNetns, type DatapathResult } from './nftables-scale.ts';
import { flagValue } from './args.ts';
import { syncBackend } from '../modes/sync.ts';

type Mode = 'iptables' | 'nftables';
interface Args { services: number; endpoints: number; seconds: number; variant: 'nft' | 'legacy' }

function parseArgs(argv: string[]): Args {
  const get = (flag: string): string | undefined => flagValue(argv, flag);
  const quick = argv.includes('--quick');
  const services = Number(get('--services') ?? (quick ? 500 : 10000));
  const endpoints = Number(get('--endpoints') ?? (quick ? 5 : 10));
  const seconds = Number(get('--seconds') ?? (quick ? 1.5 : 4));
  const variant = get('--variant') ?? (process.env.KPROXY_IPTABLES_VARIANT || 'nft');
  if (!Number.isInteger(services) || services < 2 || !Number.isInteger(endpoints) || endpoints < 1 || endpoints > 250) {
    throw new Error('--services takes an integer ≥ 2, --endpoints an integer in 1..250');
  }
  // Long runs wrap the client's ports into TIME_WAIT and cost SYN retransmits.
  if (!(seconds > 0 && seconds <= 8)) throw new Error('--seconds takes a number in (0, 8]');
  if (variant !== 'nft' && variant !== 'legacy') throw new Error(`--variant must be nft or legacy (got ${variant})`);
  return { services, endpoints, seconds, variant };
}

/** Services 0..n-1; `dialled` maps a Service index to the listener side its endpoints are on. */
function buildState(a: Args, dialled: Map<number, 0 | 1>): NodeState {
  const services = new Map<string, ServicePortState>();
  for (let i = 0; i < a.services; i++) {
    const side = dialled.get(i);
    const eps = Array.from({ length: a.endpoints }, (_, j) => endpoint(side === undefined ? syntheticIP(i, j, a.endpoints) : listenerIP(side, j)));
    const s = service(i, eps);
    services.set(s.key, s);
  }
  return { nodeName: 'bench', nodeIPs: ['10.250.0.1'], services };
}

/** ClusterIPs in the order of their rules in nat KUBE-SERVICES, as the iptables mode renders it. */
function kubeServicesOrder(batch: string): string[] {
  const nat = batch.slice(batch.indexOf('*nat\n'));
  const out: string[] = [];
  for (const m of nat.matchAll(/^-A KUBE-SERVICES .*?-d (\d+\.\d+\.\d+\.\d+)(?:\/32)? /gm)) out.push(m[1]);
  return out;
}

const options = (ns: string): ModeOptions => ({ families: [4], clusterCIDRs: ['10.128.0.0/9'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: netnsExec(ns) });

function newBackend(mode: Mode, ns: string): Backend {
  return modeOf(mode).create(options(ns), silentLogger());
}

interface Row extends DatapathResult { mode: string; loadS: number }

async function runMode(a: Args, mode: Mode, state: NodeState, first: number, last: number, dir: string): Promise<Row> {
  return withNetns(async (ns) => {
    const backend = newBackend(mode, ns);
    const t0 = performance.now();
    const r = await syncBackend(backend, state, fullChanges(state));
    if (!r.ok) throw r.error ?? new Error(`${mode} full sync failed`);
    const loadS = (performance.now() - t0) / 1000;
    const d = await measureDatapath(ns, dir, a.endpoints, vip(first), vip(last), a.seconds);
    return { ...d, mode: mode === 'iptables' ? `iptables (${a.variant})` : 'nftables', loadS };
  }, 'kpx-dpbench');
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces): run as root');
  const tools: [string, string][] = [[toolPath('nft'), 'nftables'], [ip, 'iproute2'], [toolPath(`iptables-${a.variant}-restore`), 'iptables'], ['/usr/sbin/sysctl', 'procps']];
  for (const [tool, pkg] of tools) {
    try {
      accessSync(tool, constants.X_OK);
    } catch {
      throw new Error(`${tool} missing: apt-get install -y ${pkg}`);
    }
  }
  process.env.KPROXY_IPTABLES_VARIANT = a.variant;

  // Pick first and last from the rendered KUBE-SERVICES chain (render only: no kernel).
  const order = kubeServicesOrder(newBackend('iptables', 'unused').render(buildState(a, new Map())));
  if (order.length !== a.services) throw new Error(`expected ${a.services} ClusterIP rules in nat KUBE-SERVICES, found ${order.length}`);
  const index = new Map(Array.from({ length: a.services }, (_, i) => [vip(i), i]));
  const first = index.get(order[0])!;
  const last = index.get(order[order.length - 1])!;
  const state = buildState(a, new Map([[first, 0], [last, 1]]));
  const check = kubeServicesOrder(newBackend('iptables', 'unused').render(state));
  if (check[0] !== vip(first) || check[check.length - 1] !== vip(last)) throw new Error('KUBE-SERVICES order changed with the dialled Services\' endpoints');

  console.log(`datapath: ${a.services} Services × ${a.endpoints} endpoints (TCP ClusterIPs); first = svc${first} ${vip(first)}, last = svc${last} ${vip(last)} in nat KUBE-SERVICES order`);
  const dir = mkdtempSync(join(tmpdir(), 'kpx-dpbench-'));
  const rows: Row[] = [];
  try {
    for (const mode of ['iptables', 'nftables'] as const) {
      const row = await runMode(a, mode, state, first, last, dir);
      console.error(JSON.stringify(row)); // kept if the next mode fails
      rows.push(row);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\nconnections/s from the node namespace, median of interleaved 50-connection batches over ${a.seconds} s; client CPU µs (user+system) per connection; stalled = batches over 5× their median (left out by the median)`);
  const head = ['mode', 'load (full sync)', 'first conn/s', 'last conn/s', 'last/first', 'first CPU µs/conn', 'last CPU µs/conn', 'connections', 'stalled batches'];
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const r of rows) {
    console.log(`| ${[r.mode, `${r.loadS.toFixed(1)} s`, r.first.toFixed(0), r.last.toFixed(0), (r.last / r.first).toFixed(3), r.firstCpuUs.toFixed(0), r.lastCpuUs.toFixed(0), r.connections, r.stalls].join(' | ')} |`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
