// Memory under churn, with the real kproxy process: a source file whose
// every EndpointSlice changes on each rewrite used to grow kproxy's RSS round
// after round (132 MB to 510 MB for a 1,000-Service file rewritten every
// 200 ms) and keep it. Each round here waits for its sync (no fixed delays,
// no timing asserted); RSS is read right after each round's sync. Memory comes back in steps (a compaction once it has grown some tens
// of MB), so the readings saw-tooth: the lowest of the last rounds must stay
// within 25% of the highest of the first rounds (1.41-1.54× without the
// fix at this size).
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { ProxyMode } from '../../modes/registry.ts';
import { addresses, createSandbox, requireKernelPrerequisites } from '../helpers/netns.ts';
import { startKproxy } from '../helpers/kproxy-process.ts';
import { nodeObject, writeAtomically } from './cluster.ts';
import { syntheticService, syntheticSlice } from '../fixtures/proxy/synthetic.ts';

const services = 300;
const rounds = 20;
/** Readings at each end that are compared (one reading may land just before a compaction). */
const edge = 3;

/** The cluster with every endpoint address shifted by `generation`. */
function clusterText(generation: number): string {
  const docs: object[] = [nodeObject({ name: 'node-a', ip: addresses.nodeIP })];
  for (let i = 0; i < services; i++) docs.push(syntheticService(i));
  for (let i = 0; i < services; i++) docs.push(syntheticSlice(i, 10, generation));
  return docs.map((d) => stringify(d)).join('---\n');
}

function rssMB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

for (const mode of ['iptables', 'nftables'] as const satisfies readonly ProxyMode[]) {
  test.serial(`${mode}: RSS stays flat while every EndpointSlice changes, round after round`, async (t) => {
    requireKernelPrerequisites();
    const sandbox = await createSandbox({ pods: 1 });
    t.teardown(() => sandbox.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'kproxy-churn-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const sourceFile = join(dir, 'cluster.yaml');
    await writeAtomically(sourceFile, clusterText(0));
    const kproxy = await startKproxy({ sandbox, mode, sourceFile });
    t.teardown(() => kproxy.stop('SIGKILL').then(() => undefined));

    const readings: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      const before = await kproxy.syncCount();
      await writeAtomically(sourceFile, clusterText(round));
      await kproxy.waitForSyncAfter(before, 60_000);
      readings.push(rssMB(kproxy.pid));
    }
    const first = Math.max(...readings.slice(0, edge));
    const last = Math.min(...readings.slice(-edge));
    t.log(`${mode}: RSS highest in the first ${edge} rounds ${first.toFixed(0)} MB, lowest in the last ${edge} ${last.toFixed(0)} MB (${(last / first).toFixed(2)}×); every round: ${readings.map((r) => r.toFixed(0)).join(' ')}`);
    t.true(last <= first * 1.25, `RSS grew from ${first.toFixed(0)} MB in the first rounds to ${last.toFixed(0)} MB after ${rounds} rounds`);
    t.is(kproxy.logs().match(/"msg":"file re-read"/g)?.length, rounds, 'one re-read per round');
  });
}
