// The kernel settings the IPVS mode needs, as kube-proxy sets them, each
// written only when it differs and logged when it changes:
//  - net.ipv4.vs.conntrack=1: netfilter sees IPVS connections, so
//    MASQUERADE and the conntrack cleanup of stale UDP flows work;
//  - net.ipv4.vs.expire_nodest_conn=1: a connection to a deleted real server
//    is reset at its next packet instead of hanging;
//  - net.ipv4.vs.expire_quiescent_template=1: a client with ClientIP affinity
//    to a drained (weight 0) server is scheduled anew;
//  - net.ipv4.vs.conn_reuse_mode=0 on kernels 4.1-5.8 (their mode 1 stalls a
//    reused client port for a second); left as it is from 5.9 on;
//  - net.ipv4.ip_forward=1;
//  - with --ipvs-strict-arp, arp_ignore=1 and arp_announce=2 on all
//    interfaces, so the node answers ARP only for its own interfaces'
//    addresses, not for the Service addresses on kube-ipvs0;
//  - with --ipvs-{tcp,tcpfin,udp}-timeout, IPVS's connection timeouts.
import { release } from 'node:os';
import type { Exec } from '../../lib/exec.ts';
import type { Logger } from '../../lib/log.ts';
import type { IpvsSettings } from './settings.ts';

/** The sysctls to hold, for a kernel version ("6.1.0-..."). */
export function wantedSysctls(settings: Pick<IpvsSettings, 'strictARP'>, kernel = release()): Map<string, string> {
  const want = new Map<string, string>([
    ['net.ipv4.vs.conntrack', '1'],
    ['net.ipv4.vs.expire_nodest_conn', '1'],
    ['net.ipv4.vs.expire_quiescent_template', '1'],
    ['net.ipv4.ip_forward', '1'],
  ]);
  const [major, minor] = kernel.split(/[.-]/).map(Number);
  const v = major * 1000 + minor;
  if (v >= 4001 && v < 5009) want.set('net.ipv4.vs.conn_reuse_mode', '0');
  if (settings.strictARP) {
    want.set('net.ipv4.conf.all.arp_ignore', '1');
    want.set('net.ipv4.conf.all.arp_announce', '2');
  }
  return want;
}

/** Sets what differs (one `sysctl -n` read, one `sysctl -w` write) and logs each change. */
export async function ensureSysctls(exec: Exec, want: ReadonlyMap<string, string>, log: Logger): Promise<void> {
  const keys = [...want.keys()];
  const { stdout } = await exec('sysctl', ['-n', ...keys]);
  const now = stdout.split('\n').map((l) => l.trim());
  const writes: string[] = [];
  keys.forEach((k, i) => {
    if (now[i] === want.get(k)) return;
    writes.push(`${k}=${want.get(k)}`);
    log.info({ sysctl: k, from: now[i], to: want.get(k) }, 'kernel setting changed');
  });
  if (writes.length) await exec('sysctl', ['-w', ...writes]);
}

/** Reads `ipvsadm -Ln --timeout` ("Timeout (tcp tcpfin udp): 900 120 300"). */
export function parseTimeouts(text: string): { tcp: number; tcpFin: number; udp: number } | undefined {
  const m = /Timeout \(tcp tcpfin udp\): (\d+) (\d+) (\d+)/.exec(text);
  return m ? { tcp: Number(m[1]), tcpFin: Number(m[2]), udp: Number(m[3]) } : undefined;
}

/** Sets IPVS's timeouts that are given (non-zero) and differ; logs each change. */
export async function ensureTimeouts(exec: Exec, want: IpvsSettings['timeouts'], log: Logger): Promise<void> {
  if (!want.tcp && !want.tcpFin && !want.udp) return;
  const now = parseTimeouts((await exec('ipvsadm', ['-Ln', '--timeout'])).stdout);
  const pick = (w: number, n: number | undefined): number => (w && w !== n ? w : 0);
  const set = { tcp: pick(want.tcp, now?.tcp), tcpFin: pick(want.tcpFin, now?.tcpFin), udp: pick(want.udp, now?.udp) };
  if (!set.tcp && !set.tcpFin && !set.udp) return;
  // ipvsadm --set leaves a timeout given as 0 as it is.
  await exec('ipvsadm', ['--set', String(set.tcp), String(set.tcpFin), String(set.udp)]);
  for (const k of ['tcp', 'tcpFin', 'udp'] as const) {
    if (set[k]) log.info({ timeout: k, from: now?.[k], to: set[k] }, 'IPVS timeout changed');
  }
}
