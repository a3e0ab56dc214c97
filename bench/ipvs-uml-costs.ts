// What the IPVS mode's kernel tools cost in the only IPVS kernel here
// (user-mode-linux, booted once), against the one-process-per-entry way
// kube-proxy's IPVS mode works (one `ipset add`, one `ipvsadm` per entry).
//
//   node bench/ipvs-uml-costs.ts [--services 1000,10000] [--servers 10] [--quick]
//
// Per table size, in a fresh namespace of the guest: rendering the batch
// (host, TypeScript), `ipvsadm -R` of every virtual service and real server
// into an empty table, a 20-line incremental batch on the loaded table (and
// the same 20 changes as 20 ipvsadm processes; medians of 6 runs, applied and
// taken back in turn), reading /proc/net/ip_vs and
// /proc/net/ip_vs_conn, `ipvsadm -Ln -t VIP:PORT --stats` of one service,
// `ipvsadm -Sn` and `-Ln` of the whole table, `ipset restore` of one entry
// per service (and 100 `ipset add` processes), `ip -batch` adding one /32
// per service to a dummy interface (and 100 `ip addr add` processes),
// `ipvsadm -C`. Times are the guest's wall clock around the process.
// Compare them only with figures taken in the same user-mode-linux set-up.
import { LineBatch } from '../modes/ipvs/batch.ts';
import { ipLines } from '../modes/ipvs/ip-batch.ts';
import { ipsetLines } from '../modes/ipvs/ipset.ts';
import { ipvsLines, type AddressServiceKey } from '../modes/ipvs/ipvsadm.ts';
import { parseProcIpVs } from '../modes/ipvs/proc-ip-vs.ts';
import { bootUml, type Uml } from '../test/helpers/uml.ts';
import { flagValue } from './args.ts';
import { ipv4 } from './fixtures.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const sizes = (flagValue(argv, '--services') ?? (quick ? '200' : '1000,10000')).split(',').map(Number);
const perService = Number(flagValue(argv, '--servers') ?? (quick ? 5 : 10));
if (sizes.some((n) => !Number.isInteger(n) || n < 20) || !Number.isInteger(perService) || perService < 2 || perService > 250) {
  throw new Error('--services takes integers ≥ 20 (comma-separated), --servers an integer in 2..250');
}
const sampled = 100;
const rounds = quick ? 1 : 3;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const vipOf = (i: number): AddressServiceKey => ({ protocol: 'tcp', address: ipv4(((10 << 24) | (96 << 16)) + i + 1), port: 80 });
const serverOf = (i: number, j: number): string => ipv4(((10 << 24) | (128 << 16)) + i * perService + j + 1);

const fmt = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

async function measure(uml: Uml, ns: string, n: number): Promise<[string, string][]> {
  const rows: [string, string][] = [];
  const run = async (what: string, script: string, input?: string): Promise<number> => {
    const r = await uml.run(['ip', 'netns', 'exec', ns, 'sh', '-c', script], { input, timeoutMs: 1_800_000 });
    if (r.code !== 0) throw new Error(`${what}: exit ${r.code}: ${r.stderr.slice(0, 500)}`);
    return r.ms;
  };
  const timed = async (what: string, script: string, input?: string): Promise<number> => {
    const ms = await run(what, script, input);
    rows.push([what, fmt(ms)]);
    return ms;
  };

  let t = performance.now();
  const full = new LineBatch(ipvsLines);
  for (let i = 0; i < n; i++) {
    const service = vipOf(i);
    full.add({ verb: 'add', object: 'service', service, spec: { scheduler: 'rr' } });
    for (let j = 0; j < perService; j++) full.add({ verb: 'add', object: 'server', service, server: { address: serverOf(i, j), port: 8080 }, weight: 1 });
  }
  const text = full.toString();
  if (full.error) throw full.error;
  rows.push([`render ${full.size} ipvsadm lines (host)`, `${fmt(performance.now() - t)}, ${(text.length / 1e6).toFixed(1)} MB`]);
  await timed(`ipvsadm -R: ${n} services × ${perService} servers, empty table`, 'ipvsadm -R', text);

  const changes = new LineBatch(ipvsLines);
  const step = Math.floor(n / 20);
  for (let k = 0; k < 10; k++) changes.add({ verb: 'edit', object: 'server', service: vipOf(k * step), server: { address: serverOf(k * step, 0), port: 8080 }, weight: 0 });
  for (let k = 10; k < 15; k++) changes.add({ verb: 'add', object: 'server', service: vipOf(k * step), server: { address: serverOf(n + k, 0), port: 8080 }, weight: 1 });
  for (let k = 15; k < 20; k++) changes.add({ verb: 'delete', object: 'server', service: vipOf(k * step), server: { address: serverOf(k * step, 1), port: 8080 } });
  // Each round applies the 20 changes as one batch and takes them back as one
  // batch, then does the same as one ipvsadm process per line; medians are shown.
  const line = (c: (typeof changes.commands)[number], undo: boolean): string => {
    const where = `-t ${(c.service as AddressServiceKey).address}:80 -r ${c.object === 'server' ? `${c.server.address}:8080` : ''}`;
    if (c.verb === 'edit') return `-e ${where} -m -w ${undo ? 1 : 0}`;
    return (c.verb === 'add') !== undo ? `-a ${where} -m -w 1` : `-d ${where}`;
  };
  const forward = changes.commands.map((c) => line(c, false));
  const back = changes.commands.map((c) => line(c, true));
  const batchTimes: number[] = [];
  const processTimes: number[] = [];
  for (let round = 0; round < rounds; round++) {
    batchTimes.push(await run('batch', 'ipvsadm -R', `${forward.join('\n')}\n`));
    batchTimes.push(await run('batch', 'ipvsadm -R', `${back.join('\n')}\n`));
    processTimes.push(await run('processes', `set -e\n${forward.map((l) => `ipvsadm ${l}`).join('\n')}`));
    processTimes.push(await run('processes', `set -e\n${back.map((l) => `ipvsadm ${l}`).join('\n')}`));
  }
  const batch = median(batchTimes);
  const single = median(processTimes);
  rows.push([`ipvsadm -R: 20-line incremental batch on that table (median of ${batchTimes.length})`, `${fmt(batch)} (${fmt(Math.min(...batchTimes))}-${fmt(Math.max(...batchTimes))})`]);
  rows.push([`the same 20 changes as 20 ipvsadm processes (median of ${processTimes.length})`, `${fmt(single)} (${fmt(Math.min(...processTimes))}-${fmt(Math.max(...processTimes))})`]);
  rows.push(['  ratio processes / batch', `${(single / batch).toFixed(1)}×`]);

  const proc = await uml.run(['ip', 'netns', 'exec', ns, 'cat', '/proc/net/ip_vs']);
  rows.push([`read /proc/net/ip_vs (${(proc.stdout.length / 1e6).toFixed(1)} MB)`, fmt(proc.ms)]);
  t = performance.now();
  const parsed = parseProcIpVs(proc.stdout);
  rows.push([`  parse it (host): ${parsed.length} services, ${parsed.reduce((a, s) => a + s.servers.length, 0)} real servers`, fmt(performance.now() - t)]);
  await timed('read /proc/net/ip_vs_conn', 'cat /proc/net/ip_vs_conn >/dev/null');
  await timed('ipvsadm -Ln -t VIP:PORT --stats (one service)', `ipvsadm -Ln -t ${vipOf(Math.floor(n / 2)).address}:80 --stats >/dev/null`);
  await timed('ipvsadm -Sn (whole table)', 'ipvsadm -Sn >/dev/null');
  await timed('ipvsadm -Ln (whole table)', 'ipvsadm -Ln >/dev/null');

  const sets = new LineBatch(ipsetLines).add({ verb: 'create', set: 'KUBE-CLUSTER-IP', spec: { type: 'hash:ip,port', family: 'inet', hashsize: 1024, maxelem: 65536 } });
  for (let i = 0; i < n; i++) sets.add({ verb: 'add', set: 'KUBE-CLUSTER-IP', entry: { ip: vipOf(i).address, protocol: 'tcp', port: 80 } });
  const ipsetBatch = await timed(`ipset restore: ${n} entries`, 'ipset restore', sets.toString());
  const ipsetSingle = await run('ipset add', `set -e\n${Array.from({ length: sampled }, (_, i) => `ipset add KUBE-CLUSTER-IP ${vipOf(i).address},tcp:81`).join('\n')}`);
  rows.push([`${sampled} ipset add processes (kube-proxy's way), per entry`, fmt(ipsetSingle / sampled)]);
  rows.push([`  ${n} of them, extrapolated / the batch`, `${fmt((ipsetSingle / sampled) * n)}, ${(((ipsetSingle / sampled) * n) / ipsetBatch).toFixed(0)}×`]);

  const addrs = new LineBatch(ipLines).add({ verb: 'add', object: 'link', device: 'kube-ipvs0', kind: 'dummy' });
  for (let i = 0; i < n; i++) addrs.add({ verb: 'add', object: 'address', device: 'kube-ipvs0', address: vipOf(i).address });
  const ipBatch = await timed(`ip -batch: ${n} /32 addresses on a dummy interface`, 'ip -batch -', addrs.toString());
  const ipSingle = await run('ip addr add', `set -e\n${Array.from({ length: sampled }, (_, i) => `ip addr add ${ipv4(((10 << 24) | (97 << 16)) + i + 1)}/32 dev kube-ipvs0`).join('\n')}`);
  rows.push([`${sampled} ip addr add processes, per address`, fmt(ipSingle / sampled)]);
  rows.push([`  ${n} of them, extrapolated / the batch`, `${fmt((ipSingle / sampled) * n)}, ${(((ipSingle / sampled) * n) / ipBatch).toFixed(0)}×`]);

  await timed('ipvsadm -C (flush the table)', 'ipvsadm -C');
  return rows;
}

const uml = await bootUml({ memMB: 2048 });
try {
  console.log(`ipvs-uml-costs${quick ? ' (quick)' : ''}: user-mode-linux ${uml.kernelVersion}, boot ${fmt(uml.bootMs)}, ${perService} real servers per service`);
  for (const n of sizes) {
    const ns = `bench${n}`;
    await uml.exec(['sh', '-c', `ip netns add ${ns} && ip -n ${ns} link set lo up`]);
    try {
      const rows = await measure(uml, ns, n);
      console.log(`\n${n} virtual services`);
      const width = Math.max(...rows.map((r) => r[0].length));
      for (const [what, value] of rows) console.log(`  ${what.padEnd(width)}  ${value}`);
    } finally {
      await uml.run(['ip', 'netns', 'del', ns]);
    }
  }
} finally {
  await uml.halt();
}
