// pino JSON logs on stderr, one logger per process; children name their component.
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger | undefined;

export function logger(): Logger {
  root ??= pino(
    { level: process.env.KPROXY_LOG_LEVEL ?? 'info', base: { app: 'kproxy' } },
    pino.destination({ fd: 2, sync: true }),
  );
  return root;
}

export function setLogLevel(level: string): void {
  logger().level = level;
}

/** A silent logger for tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
