// The userspace mode's own settings: each a flag and a field of the
// `userspace:` block of the KubeProxyConfiguration (kube-proxy's names where
// its old userspace mode had one: --udp-timeout, udpIdleTimeout). The core
// parses and checks them (proxy/mode-settings.ts); this file says what they
// mean to the forwarder.
import type { ModeSetting } from '../backend.ts';
import type { ForwarderOptions } from './forwarder.ts';
import { algorithms, type Algorithm } from './table.ts';

const between = (lo: number, hi: number, what: string) => (v: unknown): string | undefined =>
  typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi ? undefined : `${what} must be an integer ${lo}-${hi}`;
const positive = (what: string) => (v: unknown): string | undefined =>
  typeof v === 'number' && v > 0 ? undefined : `${what} must be longer than 0`;
/** kube-proxy's generated configs carry `udpIdleTimeout: 0s`, meaning its default: 0 keeps kproxy's. */
const zeroOrPositive = (v: unknown): string | undefined => (typeof v === 'number' && v >= 0 ? undefined : 'must not be negative');

export const userspaceSettings: readonly ModeSetting[] = [
  {
    key: 'workers', flag: 'userspace-workers', field: 'workers', kind: 'int', default: 0,
    help: 'forwarding processes (0: one per core)', validate: between(0, 64, 'workers'),
  },
  {
    key: 'relay', flag: 'userspace-relay', field: 'relay', kind: 'string', default: 'auto',
    help: 'how bytes move: native (the addon: accept, connect and splice in C), node (Node.js sockets), auto (native when built)',
    validate: (v) => (v === 'auto' || v === 'native' || v === 'node' ? undefined : 'must be auto, native or node'),
  },
  {
    key: 'scheduler', flag: 'userspace-scheduler', field: 'scheduler', kind: 'string', default: 'rr',
    help: `the algorithm of Services that ask for none by annotation: ${algorithms.join(', ')} (round robin, least connections, power of two choices, source hash)`,
    validate: (v) => ((algorithms as readonly unknown[]).includes(v) ? undefined : `must be one of ${algorithms.join(', ')}`),
  },
  {
    key: 'connectTimeouts', flag: 'userspace-connect-timeouts', field: 'connectTimeouts', kind: 'durationList', default: [250, 500, 1000, 2000],
    help: 'one connect attempt per entry, each on the next endpoint, with this timeout (kube-proxy\'s old userspace mode: 250ms,500ms,1s,2s)',
    validate: (v) => (Array.isArray(v) && v.length >= 1 && v.length <= 16 && v.every((n) => n > 0 && n <= 60_000) ? undefined : 'must be 1-16 durations, each above 0 and at most 1m'),
  },
  {
    key: 'ejectAfter', flag: 'userspace-eject-after-failures', field: 'ejectAfterFailures', kind: 'int', default: 3,
    help: 'failed connects in a row after which an endpoint is skipped for a while (passive health)', validate: between(1, 100, 'ejectAfterFailures'),
  },
  { key: 'ejectTime', flag: 'userspace-eject-time', field: 'ejectTime', kind: 'duration', default: 5000, help: 'how long a failing endpoint is first skipped; doubles each time it fails again', validate: positive('ejectTime') },
  { key: 'maxEjectTime', flag: 'userspace-max-eject-time', field: 'maxEjectTime', kind: 'duration', default: 60_000, help: 'the longest an endpoint is skipped', validate: positive('maxEjectTime') },
  {
    key: 'drainGrace', flag: 'userspace-drain-grace-period', field: 'drainGracePeriod', kind: 'duration', default: 30_000,
    help: 'how long connections to a removed endpoint may stay open (and, on SIGTERM, the old process\'s connections after its successor took over)', validate: zeroOrPositive,
  },
  { key: 'tcpIdleTimeout', flag: 'userspace-tcp-idle-timeout', field: 'tcpIdleTimeout', kind: 'duration', default: 3_600_000, help: 'a TCP connection quiet both ways for this long is closed', validate: positive('tcpIdleTimeout') },
  {
    key: 'udpIdleTimeout', flag: 'udp-timeout', field: 'udpIdleTimeout', rootField: 'udpIdleTimeout', kind: 'duration', default: 30_000,
    help: 'a UDP flow quiet both ways for this long is forgotten (kube-proxy\'s --udp-timeout; 0: the default)', validate: zeroOrPositive,
  },
  {
    key: 'handoverTimeout', flag: 'userspace-handover-timeout', field: 'handoverTimeout', kind: 'duration', default: 60_000,
    help: 'on SIGTERM, how long to keep accepting while waiting for a successor to listen beside this process (it may be answering probes before its first sync is done)',
    validate: zeroOrPositive,
  },
];

/** The settings as the backend uses them (defaults filled in by the core). */
export interface UserspaceSettings {
  readonly workers: number;
  readonly relay: 'auto' | 'native' | 'node';
  readonly scheduler: Algorithm;
  readonly connectTimeouts: readonly number[];
  readonly ejectAfter: number;
  readonly ejectTime: number;
  readonly maxEjectTime: number;
  readonly drainGrace: number;
  readonly tcpIdleTimeout: number;
  readonly udpIdleTimeout: number;
  readonly handoverTimeout: number;
}

export function settingsOf(raw: Readonly<Record<string, unknown>> | undefined): UserspaceSettings {
  const out: Record<string, unknown> = {};
  for (const s of userspaceSettings) out[s.key] = raw?.[s.key] ?? s.default;
  if (out.udpIdleTimeout === 0) out.udpIdleTimeout = userspaceSettings.find((s) => s.key === 'udpIdleTimeout')!.default;
  return out as unknown as UserspaceSettings;
}

export function forwarderOptions(s: UserspaceSettings, logLevel: string): ForwarderOptions {
  return {
    workers: s.workers,
    logLevel,
    engine: {
      connectTimeoutsMs: s.connectTimeouts,
      health: { threshold: s.ejectAfter, ejectMs: s.ejectTime, maxEjectMs: Math.max(s.ejectTime, s.maxEjectTime) },
      drainGraceMs: s.drainGrace,
      tcpIdleMs: s.tcpIdleTimeout,
      udpIdleMs: s.udpIdleTimeout,
      relay: s.relay,
    },
  };
}
