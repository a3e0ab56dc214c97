// Reads /proc/net/ip_vs: every virtual service with its real servers'
// weights and active / inactive connection counts, in one read of a file
// instead of a process (`ipvsadm -Ln` of 10,000 services takes 20 s in
// user-mode-linux). Graceful termination needs exactly these counts.
//
//   IP Virtual Server version 1.2.1 (size=4096)
//   Prot LocalAddress:Port Scheduler Flags
//     -> RemoteAddress:Port Forward Weight ActiveConn InActConn
//   TCP  0A600001:0050 rr
//     -> 0AB4000B:1F90      Masq    1      0          0
//   UDP  0A60000A:0035 sh  persistent 1080000 FFFFFFFF
//   TCP  [fd00:0000:0000:0000:0000:0000:0000:0001]:0050 wlc
//
// Addresses and ports are hex; a persistence timeout is in jiffies (HZ 100).
import { canonicalIP } from '../../lib/net.ts';
import { IpvsSyntaxError, show } from './checks.ts';
import type { AddressServiceKey, IpvsProtocol } from './ipvsadm.ts';

export interface ProcRealServer {
  readonly address: string;
  readonly port: number;
  /** Masq, Local, Route or Tunnel. */
  readonly forward: string;
  readonly weight: number;
  readonly active: number;
  readonly inactive: number;
}

export interface ProcVirtualService {
  readonly service: AddressServiceKey;
  readonly scheduler: string;
  /** The rest of the service line (flags, "persistent N MASK"), as printed. */
  readonly flags: string;
  readonly servers: ProcRealServer[];
}

const protocols: Readonly<Record<string, IpvsProtocol>> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

function hexAddress(text: string): string {
  const v6 = /^\[([0-9a-f:]+)\]$/.exec(text);
  if (v6) return canonicalIP(v6[1]);
  if (!/^[0-9A-F]{8}$/.test(text)) throw new IpvsSyntaxError(`bad address ${show(text)}`);
  return [0, 2, 4, 6].map((i) => parseInt(text.slice(i, i + 2), 16)).join('.');
}

function hostPort(text: string): { address: string; port: number } {
  const i = text.lastIndexOf(':');
  if (i < 0 || !/^[0-9A-F]{4}$/.test(text.slice(i + 1))) throw new IpvsSyntaxError(`bad address:port ${show(text)}`);
  return { address: hexAddress(text.slice(0, i)), port: parseInt(text.slice(i + 1), 16) };
}

/** A firewall-mark service as /proc/net/ip_vs shows it (without its family: the file does not say). */
export interface ProcFwmarkService {
  readonly fwmark: number;
  readonly scheduler: string;
  readonly servers: ProcRealServer[];
}

/** Parses /proc/net/ip_vs: the services by address; firewall-mark services go to `fwmarks` when given. */
export function parseProcIpVs(text: string, fwmarks?: ProcFwmarkService[]): ProcVirtualService[] {
  const out: ProcVirtualService[] = [];
  let current: { servers: ProcRealServer[] } | undefined;
  text.split('\n').forEach((line, i) => {
    if (i < 3 || line.trim() === '') return;
    try {
      if (line.startsWith('  -> ')) {
        const f = line.slice(5).trim().split(/\s+/);
        if (f.length !== 5) throw new IpvsSyntaxError('expected address:port, forward, weight, active, inactive');
        if (!current) return;
        const [where, forward, weight, active, inactive] = f;
        current.servers.push({ ...hostPort(where), forward, weight: Number(weight), active: Number(active), inactive: Number(inactive) });
        return;
      }
      const m = /^(\S+)\s+(\S+) (\S+)\s*(.*)$/.exec(line);
      if (!m) throw new IpvsSyntaxError('expected a service line');
      const protocol = protocols[m[1]];
      if (!protocol) {
        current = undefined;
        if (m[1] !== 'FWM') throw new IpvsSyntaxError(`unknown protocol ${show(m[1])}`);
        if (!/^[0-9A-F]{8}$/.test(m[2])) throw new IpvsSyntaxError(`bad firewall mark ${show(m[2])}`);
        if (fwmarks) {
          const f: ProcFwmarkService = { fwmark: parseInt(m[2], 16), scheduler: m[3], servers: [] };
          fwmarks.push(f);
          current = f;
        }
        return;
      }
      const svc: ProcVirtualService = { service: { protocol, ...hostPort(m[2]) }, scheduler: m[3], flags: m[4].trim(), servers: [] };
      out.push(svc);
      current = svc;
    } catch (e) {
      throw new IpvsSyntaxError(`/proc/net/ip_vs line ${i + 1}: ${(e as Error).message}: ${show(line)}`);
    }
  });
  return out;
}
