// The IPVS mode's own settings: kube-proxy's --ipvs-* flags and the fields
// of the `ipvs:` block of a KubeProxyConfiguration, with kube-proxy's
// meaning, plus kproxy's graceful-termination bound. The core parses and
// checks them (proxy/mode-settings.ts) and hands them to the backend.
import { cidrFamily } from '../../lib/net.ts';
import type { ModeSetting } from '../backend.ts';
import { schedulers, type Scheduler } from './ipvsadm.ts';

/** kube-proxy's default (an empty --ipvs-scheduler means rr). */
export const defaultScheduler: Scheduler = 'rr';

export const ipvsSettings: readonly ModeSetting[] = [
  {
    key: 'scheduler', flag: 'ipvs-scheduler', field: 'scheduler', kind: 'string', default: '',
    help: `the IPVS scheduler of every Service without a kproxy.io/scheduler annotation: ${schedulers.join(', ')} (default rr)`,
    validate: (v) => (v === '' || (schedulers as readonly string[]).includes(v as string)
      ? undefined : `"${String(v)}" is unknown (known: ${schedulers.join(', ')})`),
  },
  { key: 'syncPeriod', flag: 'ipvs-sync-period', kind: 'duration', default: 30_000, help: 'drift check and retry period, Go duration (stands for --iptables-sync-period)', replaces: 'syncPeriod' },
  { key: 'minSyncPeriod', flag: 'ipvs-min-sync-period', kind: 'duration', default: 1_000, help: 'minimum time between syncs, Go duration (stands for --iptables-min-sync-period)', replaces: 'minSyncPeriod' },
  { key: 'strictARP', flag: 'ipvs-strict-arp', field: 'strictARP', kind: 'bool', default: false, help: 'answer ARP only for addresses of the interface asked (arp_ignore=1, arp_announce=2), for load balancers that announce Service addresses' },
  {
    key: 'excludeCIDRs', flag: 'ipvs-exclude-cidrs', field: 'excludeCIDRs', kind: 'stringList', default: [],
    help: 'CIDRs whose virtual servers kproxy never removes (cleanup, stale entries), comma-separated',
    validate: (v) => {
      const bad = (v as string[]).filter((c) => cidrFamily(c) === 0);
      return bad.length ? `${bad.map((c) => `"${c}"`).join(', ')} ${bad.length === 1 ? 'is not a CIDR' : 'are not CIDRs'}` : undefined;
    },
  },
  { key: 'tcpTimeout', flag: 'ipvs-tcp-timeout', field: 'tcpTimeout', kind: 'duration', default: 0, help: 'idle timeout of IPVS TCP connections, Go duration (0 leaves the kernel\'s)', validate: wholeSeconds },
  { key: 'tcpFinTimeout', flag: 'ipvs-tcpfin-timeout', field: 'tcpFinTimeout', kind: 'duration', default: 0, help: 'timeout of IPVS TCP connections after a FIN, Go duration (0 leaves the kernel\'s)', validate: wholeSeconds },
  { key: 'udpTimeout', flag: 'ipvs-udp-timeout', field: 'udpTimeout', kind: 'duration', default: 0, help: 'timeout of IPVS UDP packets, Go duration (0 leaves the kernel\'s)', validate: wholeSeconds },
  {
    key: 'gracefulTerminationPeriod', flag: 'ipvs-graceful-termination-period', field: 'gracefulTerminationPeriod', kind: 'duration', default: 30_000,
    help: 'longest time a removed TCP/SCTP real server drains (weight 0) before it is deleted, Go duration (default 30s)', validate: positive,
  },
];

function positive(v: unknown): string | undefined {
  return (v as number) > 0 ? undefined : 'must be greater than 0';
}

function wholeSeconds(v: unknown): string | undefined {
  return (v as number) % 1000 === 0 ? undefined : 'must be a whole number of seconds';
}

/** The settings as the backend uses them. */
export interface IpvsSettings {
  readonly scheduler: Scheduler;
  readonly strictARP: boolean;
  readonly excludeCIDRs: readonly string[];
  /** Seconds; 0 leaves the kernel's value. */
  readonly timeouts: { readonly tcp: number; readonly tcpFin: number; readonly udp: number };
  readonly graceMs: number;
}

export function ipvsSettingsOf(values: Readonly<Record<string, unknown>> | undefined): IpvsSettings {
  const v = (key: string): unknown => values?.[key] ?? ipvsSettings.find((s) => s.key === key)!.default;
  const scheduler = (v('scheduler') as string) || defaultScheduler;
  return {
    scheduler: scheduler as Scheduler,
    strictARP: v('strictARP') as boolean,
    excludeCIDRs: v('excludeCIDRs') as string[],
    timeouts: { tcp: (v('tcpTimeout') as number) / 1000, tcpFin: (v('tcpFinTimeout') as number) / 1000, udp: (v('udpTimeout') as number) / 1000 },
    graceMs: v('gracefulTerminationPeriod') as number,
  };
}
