// The IPVS mode's fake dataplane for the shared behaviour table: the fake
// IPVS kernel (virtual services, ipsets, kube-ipvs0) together with a fake
// iptables holding the mode's chains, the node's own addresses and its
// sysctls, all driven by the mode's real batches through one Exec; and a
// tracer that follows a new connection's first packet the way the kernel
// does in IPVS mode:
//
//   from the node:  mangle OUTPUT → IPVS (LOCAL_OUT) → nat POSTROUTING
//                   (not taken by IPVS: delivered locally → filter INPUT)
//   from elsewhere: mangle PREROUTING → nat PREROUTING → (a local address?)
//                   filter INPUT → IPVS (LOCAL_IN) → nat POSTROUTING
//
// IPVS looks a firewall-mark service up first, then one by address, port
// and protocol; a virtual service with nowhere to send a connection answers
// it with ICMP port-unreachable.
import { ToolError, type Exec, type ExecResult } from '../../lib/exec.ts';
import { hostPort, inCIDR } from '../../lib/net.ts';
import type { Family } from '../../proxy/model.ts';
import type { FakeDataplane, FakeOptions, TraceOutcome, TracePacket } from '../fake.ts';
import { FakeIpvsKernel } from './fake-kernel.ts';
import { chainVerdict, FakeIptables, type ChainResult, type PacketView } from './fake-iptables.ts';
import { renderEntry, type SetEntry } from './ipset.ts';
import type { IpvsProtocol, ServiceKey } from './ipvsadm.ts';
import { dummyDevice } from './names.ts';
import { schedule } from './schedulers.ts';

const sysctlDefaults: Readonly<Record<string, string>> = {
  'net.ipv4.vs.conntrack': '0',
  'net.ipv4.vs.expire_nodest_conn': '0',
  'net.ipv4.vs.expire_quiescent_template': '0',
  'net.ipv4.vs.conn_reuse_mode': '1',
  'net.ipv4.ip_forward': '0',
  'net.ipv4.conf.all.arp_ignore': '0',
  'net.ipv4.conf.all.arp_announce': '0',
};

export class FakeIpvsDataplane implements FakeDataplane {
  readonly kernel = new FakeIpvsKernel();
  readonly iptables = new FakeIptables((name) => this.kernel.sets.has(name));
  /** The node's own addresses (on "eth0"). */
  readonly localAddresses: string[];
  readonly sysctls = new Map(Object.entries(sysctlDefaults));
  timeouts = { tcp: 900, tcpFin: 120, udp: 300 };
  /** Lines of /proc/net/ip_vs_conn (tests set them). */
  readonly connections: string[] = [];
  /** Every command run, for tests that count processes. */
  readonly calls: { readonly tool: string; readonly args: readonly string[] }[] = [];

  constructor(opts: FakeOptions) {
    this.localAddresses = [...opts.localAddresses];
  }

  readonly exec: Exec = async (tool, args, input = '') => {
    const name = tool.split('/').pop()!;
    this.calls.push({ tool: name, args });
    const argv = args.join(' ');
    const ok = (stdout = ''): ExecResult => ({ stdout, stderr: '' });
    const fail = (status: number, message: string): never => { throw new ToolError(tool, args, status, message); };
    const ipt = /^(ip6?)tables-(legacy|nft)(-save|-restore)?$/.exec(name);
    if (ipt) {
      if (ipt[2] === 'nft') fail(4, `${name}: Could not fetch rule set generation id: Invalid argument`);
      const family: Family = ipt[1] === 'ip6' ? 6 : 4;
      if (ipt[3] === '-save') return ok(this.iptables.save(family, args[0] === '-t' ? args[1] as 'nat' : undefined));
      if (ipt[3] === '-restore') {
        try {
          this.iptables.restore(family, input);
        } catch (e) {
          fail(1, `${name}: ${(e as Error).message}`);
        }
        this.syncSetsInUse();
        return ok();
      }
      fail(2, `the fake does not run ${name} ${argv}`);
    }
    if (name === 'sysctl' && args[0] === '-n') {
      const missing = args.slice(1).filter((k) => !this.sysctls.has(k));
      if (missing.length) fail(255, `sysctl: cannot stat /proc/sys/${missing[0].replace(/\./g, '/')}: No such file or directory`);
      return ok(args.slice(1).map((k) => this.sysctls.get(k)).join('\n') + '\n');
    }
    switch (`${name} ${argv}`) {
      case 'iptables --version':
        return ok('iptables v1.8.9 (legacy)\n');
      case 'cat /proc/net/ip_vs':
        return ok(this.kernel.procIpVs());
      case 'cat /proc/net/ip_vs_conn':
        return ok(`Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n${this.connections.join('\n')}${this.connections.length ? '\n' : ''}`);
      case 'ipvsadm -Ln --timeout':
        return ok(`Timeout (tcp tcpfin udp): ${this.timeouts.tcp} ${this.timeouts.tcpFin} ${this.timeouts.udp}\n`);
      case 'ipset list -n':
        return ok([...this.kernel.sets.keys()].map((n) => `${n}\n`).join(''));
      case 'ipset list -t':
        return ok([...this.kernel.sets].map(([n, s]) => `Name: ${n}\nType: ${s.spec.type}\nNumber of entries: ${s.entries.size}\n`).join('\n'));
      case 'ip -o addr show':
        return ok(this.addrShow());
      case 'ip -o link show':
        return ok(['1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536', '2: eth0: <BROADCAST,UP,LOWER_UP> mtu 1500',
          ...(this.kernel.links.has(dummyDevice) ? [`3: ${dummyDevice}: <BROADCAST,NOARP> mtu 1500`] : [])].join('\n') + '\n');
      case `ip link del ${dummyDevice}`:
        this.kernel.applyIp(`link del ${dummyDevice}\n`);
        return ok();
    }
    if (name === 'sysctl' && args[0] === '-w') {
      for (const kv of args.slice(1)) {
        const [k, v] = kv.split('=');
        if (!this.sysctls.has(k)) fail(255, `sysctl: cannot stat /proc/sys/${k.replace(/\./g, '/')}: No such file or directory`);
        this.sysctls.set(k, v);
      }
      return ok();
    }
    if (name === 'ipvsadm' && args[0] === '--set') {
      const [tcp, fin, udp] = args.slice(1).map(Number);
      this.timeouts = { tcp: tcp || this.timeouts.tcp, tcpFin: fin || this.timeouts.tcpFin, udp: udp || this.timeouts.udp };
      return ok();
    }
    if (name === 'ipvsadm' && args[0] === '-Ln' && args.length > 1) {
      const key = serviceOf(args.slice(1));
      if (key && this.kernel.service(key)) return ok(this.kernel.ipvsadmList(key));
      fail(1, 'No such service');
    }
    if (name === 'ipset' && (args[0] === 'restore')) {
      const r = await this.kernel.exec(tool, args, input);
      this.syncSetsInUse();
      return r;
    }
    return this.kernel.exec(tool, args, input);
  };

  private syncSetsInUse(): void {
    this.kernel.setsInUse.clear();
    for (const s of this.iptables.setsInUse()) this.kernel.setsInUse.add(s);
  }

  private addrShow(): string {
    const lines = ['1: lo    inet 127.0.0.1/8 scope host lo', '1: lo    inet6 ::1/128 scope host '];
    for (const a of this.localAddresses) lines.push(a.includes(':') ? `2: eth0    inet6 ${a}/64 scope global ` : `2: eth0    inet ${a}/24 scope global eth0`);
    for (const a of this.kernel.links.get(dummyDevice)?.addresses ?? []) {
      lines.push(a.includes(':') ? `3: ${dummyDevice}    inet6 ${a}/128 scope global ` : `3: ${dummyDevice}    inet ${a}/32 scope global ${dummyDevice}`);
    }
    return lines.map((l) => `${l}\\       valid_lft forever preferred_lft forever\n`).join('');
  }

  private isLocal(ip: string): boolean {
    return ip.startsWith('127.') || ip === '::1' || this.localAddresses.includes(ip) || (this.kernel.links.get(dummyDevice)?.addresses.includes(ip) ?? false);
  }

  /** Whether a packet is a member of a set, under the match's flags. */
  private member(set: string, flags: string, p: PacketView): { skbmark?: { value: number; mask: number } } | null {
    const s = this.kernel.sets.get(set);
    if (!s) return null;
    const dir = flags.split(',');
    const ipOf = (d: string): string => (d === 'src' ? p.src : p.dst);
    let candidates: string[];
    switch (s.spec.type) {
      case 'bitmap:port':
        candidates = [String(dir[0] === 'src' ? 0 : p.dport)];
        break;
      case 'hash:ip':
        candidates = [ipOf(dir[0])];
        break;
      case 'hash:ip,port':
        candidates = [renderEntry({ ip: ipOf(dir[0]), protocol: p.proto, port: p.dport })];
        break;
      case 'hash:ip,port,ip':
        candidates = [renderEntry({ ip: ipOf(dir[0]), protocol: p.proto, port: p.dport, ip2: ipOf(dir[2]) })];
        break;
      case 'hash:ip,port,net': {
        const base = `${renderEntry({ ip: ipOf(dir[0]), protocol: p.proto, port: p.dport })},`;
        const hit = [...s.entries.keys()].find((e) => e.startsWith(base) && inCIDR(ipOf(dir[2]), e.slice(base.length)));
        return hit ? {} : null;
      }
    }
    const hit = candidates.find((c) => s.entries.has(c));
    if (hit === undefined) return null;
    const mark = s.marks.get(hit);
    return mark ? { skbmark: mark } : {};
  }

  private view(p: TracePacket, dst: string, dport: number, mark: number, ipvs: boolean): PacketView {
    return {
      src: p.src, dst, dport, mark, ipvs, proto: p.protocol.toLowerCase() as IpvsProtocol,
      isLocal: (ip) => this.isLocal(ip), inCIDR: (ip, c) => inCIDR(ip, c),
      member: (set, flags, v) => this.member(set, flags, v),
    };
  }

  private verdict(r: ChainResult): TraceOutcome | undefined {
    if (r.kind === 'drop') return { verdict: 'drop', masquerade: false };
    if (r.kind === 'reject') return { verdict: r.with === 'tcp-reset' ? 'reset' : 'icmp', masquerade: false };
    return undefined;
  }

  trace(p: TracePacket): TraceOutcome[] {
    const f = p.family;
    const v = this.view(p, p.dst, p.dport, 0, false);
    const fromNode = p.from === 'node';
    const first = chainVerdict(this.iptables, f, 'mangle', fromNode ? 'OUTPUT' : 'PREROUTING', v);
    const early = this.verdict(first);
    if (early) return [early];
    if (!fromNode) chainVerdict(this.iptables, f, 'nat', 'PREROUTING', v);
    const local = this.isLocal(p.dst);
    // Forwarded traffic meets filter INPUT before IPVS takes it at LOCAL_IN.
    if (!fromNode && local) {
      const r = this.verdict(chainVerdict(this.iptables, f, 'filter', 'INPUT', v));
      if (r) return [r];
    }
    const svc = this.lookup(f, v.mark, v.proto, p.dst, p.dport);
    if (svc && (fromNode || local)) {
      const choice = schedule(svc.spec.scheduler, svc.spec.flags ?? [], svc.servers, { src: p.src, srcPort: 40000, dst: p.dst });
      if (choice.candidates.length === 0) return [{ verdict: 'icmp', masquerade: false }];
      return choice.candidates.map((s) => {
        const post = this.view(p, s.address, s.port, v.mark, true);
        const masquerade = chainVerdict(this.iptables, f, 'nat', 'POSTROUTING', post).kind === 'masquerade';
        return { verdict: 'accept', endpoint: hostPort(s.address, s.port), masquerade };
      });
    }
    // Not IPVS's: the node's own traffic to a local address loops back through filter INPUT.
    if (fromNode && local) {
      const r = this.verdict(chainVerdict(this.iptables, f, 'filter', 'INPUT', v));
      if (r) return [r];
    }
    return [{ verdict: 'accept', masquerade: false }];
  }

  private lookup(f: Family, mark: number, proto: IpvsProtocol, dst: string, dport: number) {
    if (mark !== 0) {
      const byMark = this.kernel.service({ fwmark: mark, family: f });
      if (byMark) return byMark;
    }
    return this.kernel.service({ protocol: proto, address: dst, port: dport });
  }

  /** A set member as text, for tests. */
  static entry(e: SetEntry): string {
    return renderEntry(e);
  }
}

/** The service an `ipvsadm -Ln` argument list names (-t/-u/--sctp-service ADDR:PORT, -f MARK [-6]). */
function serviceOf(args: readonly string[]): ServiceKey | undefined {
  if (args[0] === '-f') return { fwmark: Number(args[1]), family: args[2] === '-6' ? 6 : 4 };
  const proto = args[0] === '-t' ? 'tcp' : args[0] === '-u' ? 'udp' : args[0] === '--sctp-service' ? 'sctp' : undefined;
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(args[1] ?? '');
  if (!proto || !m) return undefined;
  return { protocol: proto, address: m[1], port: Number(m[2]) };
}
