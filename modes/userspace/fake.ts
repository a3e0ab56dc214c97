// The userspace mode's fake dataplane for the shared behaviour tests: a
// fake `ip` holding the addresses the backend adds (on kproxy0), the node's
// own addresses, and the table the backend gives its forwarder (kept, no
// socket opened). The tracer answers from them as the kernel and the
// forwarder would: a listener decides by the client's address (source
// ranges, the cluster route); a Service address with no listener on the
// port is a local address the kernel answers for; anything else is left
// alone. Endpoints always see the node's address.
import { ToolError, type Exec } from '../../lib/exec.ts';
import { canonicalIP, hostPort, inCIDR } from '../../lib/net.ts';
import type { FakeDataplane, FakeOptions, TraceOutcome, TracePacket } from '../fake.ts';
import { ADDRESS_DEVICE, ADDRESS_METRIC } from './addresses.ts';
import { registerFakeHost } from './host.ts';
import { TableForwarder } from './table-forwarder.ts';
import { refusesAll, sourceAllowed, type ListenerSpec } from './table.ts';

/** A network namespace's addresses as `ip` sees them, for the address commands the backend runs. */
class FakeIp {
  device = false;
  readonly owned = new Set<string>();
  /** The node's own addresses, read at each listing (a test may add one). */
  readonly #node: readonly string[];

  constructor(node: readonly string[]) {
    this.#node = node;
  }

  get node(): string[] {
    return this.#node.map(canonicalIP);
  }

  listing(dev?: string): string {
    const lines: string[] = [];
    const line = (i: number, d: string, ip: string, extra: string) => `${i}: ${d}    inet${ip.includes(':') ? '6' : ''} ${ip}/${ip.includes(':') ? 128 : 32} ${extra}scope global ${d}\\       valid_lft forever preferred_lft forever`;
    if (dev === undefined || dev === 'eth0') this.node.forEach((ip) => lines.push(line(2, 'eth0', ip, '')));
    if (this.device && (dev === undefined || dev === ADDRESS_DEVICE)) for (const ip of this.owned) lines.push(line(3, ADDRESS_DEVICE, ip, `metric ${ADDRESS_METRIC} `));
    return lines.join('\n') + '\n';
  }

  readonly exec: Exec = async (tool, args, input) => {
    const fail = (text: string): never => {
      throw new ToolError(tool, args, 1, text);
    };
    if (tool !== 'ip') fail(`the userspace fake runs no ${tool}`);
    const cmd = args.join(' ');
    if (cmd === `link add ${ADDRESS_DEVICE} type dummy`) {
      if (this.device) fail('RTNETLINK answers: File exists');
      this.device = true;
    } else if (cmd === `link set ${ADDRESS_DEVICE} up` || cmd === '-o link show') {
      if (!this.device && cmd !== '-o link show') fail(`Cannot find device "${ADDRESS_DEVICE}"`);
      if (cmd === '-o link show') return { stdout: this.device ? `3: ${ADDRESS_DEVICE}: <BROADCAST,NOARP,UP,LOWER_UP> mtu 1500\n` : '', stderr: '' };
    } else if (cmd === `link del ${ADDRESS_DEVICE}`) {
      this.device = false;
      this.owned.clear();
    } else if (cmd === '-o address show') {
      return { stdout: this.listing(), stderr: '' };
    } else if (args.length === 5 && cmd.startsWith('-o address show dev ')) {
      return { stdout: this.listing(args[4]), stderr: '' };
    } else if (cmd === '-batch -') {
      for (const l of (input ?? '').split('\n').filter(Boolean)) {
        const m = /^address (replace|del) ([0-9a-f.:]+)\/(32|128) dev (\S+)(?: metric (\d+))?( nodad)?$/.exec(l);
        if (!m || m[4] !== ADDRESS_DEVICE || !this.device) fail(`Error: an inet address is expected rather than "${l}"`);
        if (m![1] === 'replace') this.owned.add(canonicalIP(m![2]));
        else this.owned.delete(canonicalIP(m![2]));
      }
    } else fail(`the userspace fake does not know "ip ${cmd}"`);
    return { stdout: '', stderr: '' };
  };
}

function trace(ip: FakeIp, fwd: TableForwarder, p: TracePacket): TraceOutcome[] {
  const dst = canonicalIP(p.dst);
  const src = canonicalIP(p.src);
  const l: ListenerSpec | undefined = p.protocol === 'SCTP' ? undefined : fwd.listener(p.protocol, dst, p.dport);
  // A UDP listener that refuses every client is not bound: the kernel answers with ICMP port unreachable.
  if (l !== undefined && l.protocol === 'UDP' && refusesAll(l)) return [{ verdict: 'icmp', masquerade: false }];
  if (l === undefined) {
    // Nothing listens: a Service address kproxy made local is answered by the kernel; other traffic is left alone.
    if (!ip.owned.has(dst)) return [{ verdict: 'accept', masquerade: false }];
    return [{ verdict: p.protocol === 'TCP' ? 'reset' : 'icmp', masquerade: false }];
  }
  if (!sourceAllowed(l, src)) return [{ verdict: 'drop', masquerade: false }];
  const fromCluster = l.fromCluster !== undefined && (src === l.ip || fwd.clusterSources.some((c) => inCIDR(src, c)));
  const route = fromCluster ? l.fromCluster! : l.remote;
  if (route.endpoints.length === 0) {
    // A TCP client is accepted and reset; a UDP datagram to a bound socket is dropped.
    return [{ verdict: route.whenEmpty === 'reject' && l.protocol === 'TCP' ? 'reset' : 'drop', masquerade: false }];
  }
  return route.endpoints.map((e) => ({ verdict: 'accept', endpoint: hostPort(e.ip, e.port), masquerade: true }));
}

export function fakeUserspace(opts: FakeOptions): FakeDataplane {
  const ip = new FakeIp(opts.localAddresses);
  const fwd = new TableForwarder();
  const listing = async () => ({ addresses: ip.listing(), links: (await ip.exec('ip', ['-o', 'link', 'show'])).stdout });
  registerFakeHost(ip.exec, { exec: ip.exec, listing, live: false, startForwarder: async () => fwd });
  return { exec: ip.exec, trace: (p) => trace(ip, fwd, p) };
}
