// Runs the userspace forwarder (modes/userspace/forwarder.ts) as a process
// of its own, inside whatever network namespace it was started in, driven
// by JSON lines on stdin; answers one JSON line on stdout per command.
// SIGTERM runs the restart handover, as kproxy does. Used by kernel tests
// and the benchmark, which start it with `ip netns exec`.
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { hostExec } from '../../lib/exec.ts';
import { ServiceAddresses } from '../../modes/userspace/addresses.ts';
import { Forwarder, type ForwarderOptions } from '../../modes/userspace/forwarder.ts';

interface Command {
  readonly cmd: 'apply' | 'snapshot' | 'addresses' | 'rss' | 'stop';
  readonly table?: unknown;
  readonly addresses?: string[];
  readonly graceMs?: number;
}

const opts = JSON.parse(process.env.KPROXY_FORWARDER_OPTIONS ?? '{}') as ForwarderOptions & { handoverWaitMs?: number; drainMs?: number };
const log = pino({ level: process.env.KPROXY_LOG_LEVEL ?? 'warn' }, pino.destination({ fd: 2, sync: true }));
const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');

function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

const started = performance.now();
const forwarder = await Forwarder.start(log, opts);
const addresses = new ServiceAddresses(hostExec, log);
await addresses.setup();
out({ ready: true, pids: forwarder.pids, startMs: performance.now() - started, device: addresses.device });

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  forwarder.handover(opts.handoverWaitMs ?? 10_000, opts.drainMs ?? 10_000)
    .then((r) => { out({ handover: r }); process.exit(0); })
    .catch((e: Error) => { out({ error: e.message }); process.exit(1); });
});

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === '') continue;
  const c = JSON.parse(line) as Command;
  const t0 = performance.now();
  try {
    switch (c.cmd) {
      case 'apply':
        out({ result: await forwarder.apply(c.table), ms: performance.now() - t0 });
        break;
      case 'snapshot':
        out({ snapshot: await forwarder.snapshot() });
        break;
      case 'addresses':
        out({ result: await addresses.sync(c.addresses ?? []), ms: performance.now() - t0 });
        break;
      case 'rss':
        out({ supervisorKiB: rssKiB(process.pid), workersKiB: forwarder.pids.map(rssKiB) });
        break;
      case 'stop':
        await forwarder.stop(c.graceMs ?? 0);
        out({ stopped: true });
        process.exit(0);
    }
  } catch (e) {
    out({ error: (e as Error).message });
  }
}
// stdin closed: the test is gone.
if (!stopping) {
  await forwarder.stop(0);
  process.exit(0);
}
