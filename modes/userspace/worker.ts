// Entry point of one forwarding process: an Engine driven by its
// supervisor over IPC. It exits when the supervisor goes away, so a killed
// kproxy never leaves forwarders (and their listeners) behind.
import { pino } from 'pino';
import { compactHeap } from '../../lib/heap.ts';
import { Engine } from './engine.ts';
import { fdModule, WORKER_FD_CHANNEL } from './fd-channel.ts';
import { WORKER_CONFIG_ENV, type FromWorker, type ToWorker, type WorkerConfig } from './messages.ts';

const config = JSON.parse(process.env[WORKER_CONFIG_ENV] ?? '{}') as WorkerConfig;
const log = pino({ level: config.logLevel ?? 'info', base: { app: 'kproxy', component: 'forwarder', worker: config.index } }, pino.destination({ fd: 2, sync: true }));
const engine = new Engine(log, config.options);

/** Listening sockets passed by the supervisor for the next apply, by listener key. */
const adopted = new Map<string, number>();

/** Tables at least this large are followed by a compacting collection. */
const COMPACT_AFTER = 2000;

function send(m: FromWorker): void {
  process.send?.(m);
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'adopt': {
      const fds = fdModule();
      if (fds instanceof Error || !config.fdChannel) throw new Error(`listening sockets were passed but cannot be received: ${fds instanceof Error ? fds.message : 'no channel'}`);
      const got = fds.recvFds(WORKER_FD_CHANNEL, m.keys.length, 10_000);
      m.keys.forEach((key, i) => {
        const old = adopted.get(key);
        if (old !== undefined) fds.closeFd(old);
        adopted.set(key, got[i]);
      });
      send({ type: 'done', seq: m.seq });
      return;
    }
    case 'apply': {
      const fds = fdModule();
      const adopt = new Map(adopted);
      adopted.clear();
      const result = await engine.apply(m.table, adopt, (fd) => { if (!(fds instanceof Error)) fds.closeFd(fd); });
      // A large table leaves its decoded message and the replaced listener state behind: give that memory back.
      if (m.table.listeners.length >= COMPACT_AFTER) compactHeap();
      send({ type: 'applied', seq: m.seq, result });
      return;
    }
    case 'update': {
      const fds = fdModule();
      const adopt = new Map(adopted);
      adopted.clear();
      const result = await engine.update(m.delta, adopt, (fd) => { if (!(fds instanceof Error)) fds.closeFd(fd); });
      if (m.delta.upsert.length >= COMPACT_AFTER) compactHeap();
      send({ type: 'applied', seq: m.seq, result });
      return;
    }
    case 'describe':
      send({ type: 'described', seq: m.seq, listeners: engine.describe(m.keys) });
      return;
    case 'snapshot':
      send({ type: 'snapshot', seq: m.seq, snapshot: engine.snapshot(m.endpoints ?? true) });
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
