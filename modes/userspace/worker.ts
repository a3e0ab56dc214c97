// Entry point of one forwarding process: an Engine driven by its
// supervisor over IPC. It exits when the supervisor goes away, so a killed
// kproxy never leaves forwarders (and their listeners) behind.
import { pino } from 'pino';
import { compactHeap } from '../../lib/heap.ts';
import { Engine } from './engine.ts';
import { WORKER_CONFIG_ENV, type FromWorker, type ToWorker, type WorkerConfig } from './messages.ts';

const config = JSON.parse(process.env[WORKER_CONFIG_ENV] ?? '{}') as WorkerConfig;
const log = pino({ level: config.logLevel ?? 'info', base: { app: 'kproxy', component: 'forwarder', worker: config.index } }, pino.destination({ fd: 2, sync: true }));
const engine = new Engine(log, config.options);

/** Tables at least this large are followed by a compacting collection. */
const COMPACT_AFTER = 2000;

function send(m: FromWorker): void {
  process.send?.(m);
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'apply': {
      const result = await engine.apply(m.table);
      // A large table leaves its decoded message and the replaced listener state behind: give that memory back.
      if (m.table.listeners.length >= COMPACT_AFTER) compactHeap();
      send({ type: 'applied', seq: m.seq, result });
      return;
    }
    case 'snapshot':
      send({ type: 'snapshot', seq: m.seq, snapshot: engine.snapshot() });
      return;
    case 'stop-accepting':
      engine.stopAccepting();
      send({ type: 'done', seq: m.seq });
      return;
    case 'stop':
      await engine.stop(m.graceMs);
      send({ type: 'done', seq: m.seq });
      process.disconnect?.();
      process.exit(0);
  }
}

process.on('message', (m: ToWorker) => {
  handle(m).catch((e: unknown) => send({ type: 'error', seq: m.seq, message: e instanceof Error ? e.message : String(e) }));
});
// The supervisor is gone: stop at once (a successor, if any, has its own workers).
process.on('disconnect', () => process.exit(0));
// SIGTERM goes to the whole process group; the supervisor decides when workers stop.
process.on('SIGTERM', () => {});
process.on('SIGINT', () => {});
send({ type: 'ready' });
