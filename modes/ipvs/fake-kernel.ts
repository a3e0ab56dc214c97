// A stand-in for the kernel's IPVS table, its ipsets and the addresses on
// its links, for fast tests. It parses the three batches the IPVS mode
// sends (`ipvsadm -R`, `ipset restore`, `ip -batch -`) with the typed line
// models and applies each all-or-nothing, refusing what the real tools
// refuse with their messages (a duplicate virtual service, a real server
// for a missing one, a scheduler whose module is missing, an entry that
// does not fit its set, ...). The real tools are not all-or-nothing: a line
// `ipvsadm -R` cannot apply is reported and skipped (its exit status is the
// last line's), `ipset restore` and `ip -batch` stop at the first failure
// and keep what came before (README.md); a sync must treat any failure as
// a failed sync either way.
//
// Listings follow `ipvsadm -Sn`, `ipvsadm -Ln` and `ipset save` exactly,
// except what the kernel makes up itself: a hash set's random `initval`
// (here derived from the set's name) and the order of a hash set's members
// (here the order they were added; the kernel lists them in hash order).
import { KproxyError } from '../../lib/errors.ts';
import { ToolError, type Exec, type ExecResult } from '../../lib/exec.ts';
import { addressValue, ipvsHostPort } from './checks.ts';
import { parseIp, type IpCommand } from './ip-batch.ts';
import { entryFamily, entryType, parseIpset, renderEntry, renderSkbMark, type IpsetCommand, type SetEntry, type SetSpec, type SetType, type SkbMark } from './ipset.ts';
import {
  isFwmark, parseIpvs, schedulers, serviceFamily, serviceText, vsId,
  type IpvsCommand, type Scheduler, type ServerKey, type ServiceKey, type ServiceSpec,
} from './ipvsadm.ts';

export class IpvsKernelError extends KproxyError {
  /** 1-based line of the batch that failed. */
  readonly line: number;
  constructor(message: string, line: number) {
    super('KPROXY_IPVS_REJECTED', message);
    this.name = 'IpvsKernelError';
    this.line = line;
  }
}

export interface FakeRealServer {
  readonly address: string;
  readonly port: number;
  weight: number;
  /** The last weight that was not 0 (mh keeps table slots for drained servers by it). */
  lastWeight: number;
  /** Connection counts, set by tests (ipvsadm -Ln's ActiveConn / InActConn). */
  active: number;
  inactive: number;
}

export interface FakeVirtualService {
  readonly key: ServiceKey;
  spec: ServiceSpec;
  /** In the kernel's list order: a new real server goes to the head. */
  servers: FakeRealServer[];
}

export interface FakeSet {
  spec: SetSpec;
  /** Rendered entry → comment (undefined when none), in the order added. */
  entries: Map<string, string | undefined>;
  /** Rendered entry → its skbmark, for sets with skbinfo. */
  marks: Map<string, SkbMark>;
}

export interface FakeLink {
  readonly kind: 'dummy';
  up: boolean;
  /** Host addresses, in the order added. */
  addresses: string[];
}

interface State {
  services: Map<string, FakeVirtualService>;
  sets: Map<string, FakeSet>;
  links: Map<string, FakeLink>;
}

export const serviceId = vsId;

function clone(state: State): State {
  return {
    services: new Map([...state.services].map(([k, s]) => [k, { key: s.key, spec: s.spec, servers: s.servers.map((r) => ({ ...r })) }])),
    sets: new Map([...state.sets].map(([k, s]) => [k, { spec: s.spec, entries: new Map(s.entries), marks: new Map(s.marks) }])),
    links: new Map([...state.links].map(([k, l]) => [k, { ...l, addresses: [...l.addresses] }])),
  };
}

const protocolNumber = { tcp: 6, udp: 17, sctp: 132 } as const;
const protoName = { tcp: 'TCP ', udp: 'UDP ', sctp: 'SCTP' } as const;

// ipvsadm compares 32-bit words by subtracting them as C ints, so two
// addresses more than 2^31 apart compare the wrong way round.
function wordsCompare(a: string, b: string): number {
  const va = addressValue(a);
  const vb = addressValue(b);
  const words = a.includes(':') ? 4 : 1;
  for (let i = words - 1; i >= 0; i--) {
    const wa = Number((va >> BigInt(32 * i)) & 0xffffffffn);
    const wb = Number((vb >> BigInt(32 * i)) & 0xffffffffn);
    const r = (wa - wb) | 0;
    if (r !== 0) return r;
  }
  return 0;
}

// ipvsadm compares firewall marks first (0 for address services), then the
// family (AF_INET 2, AF_INET6 10), protocol, address and port.
function compareServices(a: ServiceKey, b: ServiceKey): number {
  const fa = isFwmark(a) ? a.fwmark : 0;
  const fb = isFwmark(b) ? b.fwmark : 0;
  if (fa !== fb) return fa < fb ? -1 : 1;
  const family = (serviceFamily(a) === 6 ? 10 : 2) - (serviceFamily(b) === 6 ? 10 : 2);
  if (family || isFwmark(a) || isFwmark(b)) return family;
  return (protocolNumber[a.protocol] - protocolNumber[b.protocol]) || wordsCompare(a.address, b.address) || (a.port - b.port);
}

function compareServers(a: ServerKey, b: ServerKey): number {
  return wordsCompare(a.address, b.address) || (a.port - b.port);
}

// glibc's qsort is a top-down merge sort; with ipvsadm's wrapping
// comparison the result depends on it, so it is reproduced here.
function mergeSort<T>(items: readonly T[], cmp: (a: T, b: T) => number): T[] {
  if (items.length <= 1) return [...items];
  const n1 = Math.floor(items.length / 2);
  const left = mergeSort(items.slice(0, n1), cmp);
  const right = mergeSort(items.slice(n1), cmp);
  const out: T[] = [];
  let i = 0;
  let j = 0;
  while (i < left.length && j < right.length) out.push(cmp(left[i], right[j]) <= 0 ? left[i++] : right[j++]);
  return out.concat(left.slice(i), right.slice(j));
}

const setDefaults = { hashsize: 1024, maxelem: 65536 };
const elementsOf: Readonly<Record<SetType, number>> = { 'hash:ip': 1, 'hash:ip,port': 2, 'hash:ip,port,ip': 3, 'hash:ip,port,net': 3, 'bitmap:port': 1 };

function sameSpec(a: SetSpec, b: SetSpec): boolean {
  if (a.type !== b.type || Boolean(a.comment) !== Boolean(b.comment)) return false;
  if (a.type === 'bitmap:port' || b.type === 'bitmap:port') {
    return a.type === 'bitmap:port' && b.type === 'bitmap:port' && a.range[0] === b.range[0] && a.range[1] === b.range[1];
  }
  return a.family === b.family && (a.hashsize ?? setDefaults.hashsize) === (b.hashsize ?? setDefaults.hashsize) &&
    (a.maxelem ?? setDefaults.maxelem) === (b.maxelem ?? setDefaults.maxelem) && Boolean(a.skbinfo) === Boolean(b.skbinfo);
}

// A stable stand-in for the kernel's random initval.
function initval(name: string): string {
  let h = 0x811c9dc5;
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return `0x${h.toString(16).padStart(8, '0')}`;
}

export class FakeIpvsKernel {
  private state: State = { services: new Map(), sets: new Map(), links: new Map() };
  /** Scheduler modules that load; remove one to see what a missing module does. */
  readonly loadedSchedulers = new Set<Scheduler>(schedulers);
  /** Sets an iptables rule refers to (destroy fails while they are). */
  readonly setsInUse = new Set<string>();
  /** Every batch applied successfully, per tool, in order (tests look at sizes). */
  readonly applied: { readonly tool: 'ipvsadm' | 'ipset' | 'ip'; readonly batch: string }[] = [];

  get services(): ReadonlyMap<string, FakeVirtualService> {
    return this.state.services;
  }

  get sets(): ReadonlyMap<string, FakeSet> {
    return this.state.sets;
  }

  get links(): ReadonlyMap<string, FakeLink> {
    return this.state.links;
  }

  service(key: ServiceKey): FakeVirtualService | undefined {
    return this.state.services.get(serviceId(key));
  }

  /** Sets a real server's connection counts (what lc/wlc/sed/nq and ipvsadm -Ln see). */
  setConnections(service: ServiceKey, server: ServerKey, counts: { active: number; inactive?: number }): void {
    const r = this.service(service)?.servers.find((s) => s.address === server.address && s.port === server.port);
    if (!r) throw new Error(`no real server ${ipvsHostPort(server.address, server.port)} in ${serviceId(service)}`);
    r.active = counts.active;
    r.inactive = counts.inactive ?? 0;
  }

  /** Applies an `ipvsadm -R` batch all-or-nothing; throws IpvsKernelError naming the failing line. */
  applyIpvsadm(batch: string): void {
    this.applyLines('ipvsadm', batch, (state, line) => this.ipvsOne(state, parseIpvs(line)), false);
  }

  /**
   * Runs an `ipvsadm -R` batch as the real tool does (README.md): each line
   * on its own, a refused one reported on stderr and skipped, a line ipvsadm
   * cannot read ending the run (exit 2); the exit status is the last line's.
   */
  runIpvsadmLines(batch: string): { status: number; stderr: string } {
    let stderr = '';
    let status = 0;
    const lines = batch.endsWith('\n') ? batch.slice(0, -1).split('\n') : batch.split('\n');
    for (const line of batch === '' ? [] : lines) {
      if (line.trim() === '') continue;
      let cmd: IpvsCommand;
      try {
        cmd = parseIpvs(line);
      } catch (e) {
        return { status: 2, stderr: `${stderr}${(e as Error).message}\n` };
      }
      try {
        this.ipvsOne(this.state, cmd);
        status = 0;
      } catch (e) {
        stderr += `${(e as Error).message}\n`;
        status = 255;
      }
    }
    if (status === 0) this.applied.push({ tool: 'ipvsadm', batch });
    return { status, stderr };
  }

  /** Applies an `ipset restore` batch all-or-nothing; `exist` is ipset's -exist. */
  applyIpset(batch: string, opts: { exist?: boolean } = {}): void {
    this.applyLines('ipset', batch, (state, line) => this.ipsetOne(state, parseIpset(line, (name) => state.sets.get(name)?.spec.type), Boolean(opts.exist)), true);
  }

  /** Applies an `ip -batch -` batch all-or-nothing. */
  applyIp(batch: string): void {
    this.applyLines('ip', batch, (state, line) => this.ipOne(state, parseIp(line)), true);
  }

  private applyLines(tool: 'ipvsadm' | 'ipset' | 'ip', batch: string, one: (state: State, line: string) => void, commentsOk: boolean): void {
    const work = clone(this.state);
    const lines = batch.endsWith('\n') ? batch.slice(0, -1).split('\n') : batch.split('\n');
    if (batch === '') lines.length = 0;
    lines.forEach((line, i) => {
      // Blank lines are skipped; ipset and ip skip comment lines too, ipvsadm -R fails on them.
      if (line.trim() === '' || (commentsOk && line.trimStart().startsWith('#'))) return;
      try {
        one(work, line);
      } catch (e) {
        throw new IpvsKernelError(`${tool}: line ${i + 1}: ${(e as Error).message}\n${line}`, i + 1);
      }
    });
    this.state = work;
    this.applied.push({ tool, batch });
  }

  private ipvsOne(state: State, cmd: IpvsCommand): void {
    const id = serviceId(cmd.service);
    const svc = state.services.get(id);
    if (cmd.object === 'service') {
      if (cmd.verb === 'add' && svc) throw new Error('Service already exists');
      if (cmd.verb !== 'add' && !svc) throw new Error('No such service');
      if (cmd.verb === 'delete') {
        state.services.delete(id);
        return;
      }
      if (!this.loadedSchedulers.has(cmd.spec.scheduler)) throw new Error('Scheduler or persistence engine not found');
      if (svc) svc.spec = cmd.spec;
      else state.services.set(id, { key: cmd.service, spec: cmd.spec, servers: [] });
      return;
    }
    if (!svc) throw new Error('Service not defined');
    const i = svc.servers.findIndex((s) => s.address === cmd.server.address && s.port === cmd.server.port);
    if (cmd.verb === 'add') {
      if (i >= 0) throw new Error('Destination already exists');
      svc.servers.unshift({ ...cmd.server, weight: cmd.weight, lastWeight: cmd.weight, active: 0, inactive: 0 });
      return;
    }
    if (i < 0) throw new Error('No such destination');
    if (cmd.verb === 'delete') {
      svc.servers.splice(i, 1);
      return;
    }
    const r = svc.servers[i];
    r.weight = cmd.weight;
    if (cmd.weight !== 0) r.lastWeight = cmd.weight;
  }

  private ipsetOne(state: State, cmd: IpsetCommand, exist: boolean): void {
    const set = state.sets.get(cmd.set);
    const missing = (): Error => new Error('The set with the given name does not exist');
    switch (cmd.verb) {
      case 'create':
        if (set) {
          if (exist && sameSpec(set.spec, cmd.spec)) return;
          throw new Error('Set cannot be created: set with the same name already exists');
        }
        state.sets.set(cmd.set, { spec: cmd.spec, entries: new Map(), marks: new Map() });
        return;
      case 'add':
      case 'del': {
        if (!set) throw missing();
        this.checkFits(set.spec, cmd.entry);
        const key = renderEntry(cmd.entry);
        if (cmd.verb === 'del') {
          if (!set.entries.has(key)) {
            if (exist) return;
            throw new Error("Element cannot be deleted from the set: it's not added");
          }
          set.entries.delete(key);
          set.marks.delete(key);
          return;
        }
        if (cmd.comment !== undefined && !set.spec.comment) throw new Error('Comment cannot be used: set was created without comment support');
        if (cmd.skbmark !== undefined && (set.spec.type === 'bitmap:port' || !set.spec.skbinfo)) {
          throw new Error('Skbinfo mapping cannot be used: set was created without skbinfo support');
        }
        if (set.entries.has(key)) {
          if (exist) return;
          throw new Error("Element cannot be added to the set: it's already added");
        }
        const max = set.spec.type === 'bitmap:port' ? Infinity : set.spec.maxelem ?? setDefaults.maxelem;
        if (set.entries.size >= max) throw new Error('Hash is full, cannot add more elements');
        set.entries.set(key, cmd.comment);
        if (cmd.skbmark) set.marks.set(key, cmd.skbmark);
        return;
      }
      case 'flush':
        if (!set) throw missing();
        set.entries.clear();
        set.marks.clear();
        return;
      case 'destroy':
        if (!set) throw missing();
        if (this.setsInUse.has(cmd.set)) throw new Error('Set cannot be destroyed: it is in use by a kernel component');
        state.sets.delete(cmd.set);
        return;
      case 'swap': {
        const other = state.sets.get(cmd.other);
        if (!set || !other) throw missing();
        if (set.spec.type !== other.spec.type || (set.spec.type !== 'bitmap:port' && other.spec.type !== 'bitmap:port' && set.spec.family !== other.spec.family)) {
          throw new Error('The sets cannot be swapped: their type does not match');
        }
        state.sets.set(cmd.set, other);
        state.sets.set(cmd.other, set);
        return;
      }
    }
  }

  private checkFits(spec: SetSpec, entry: SetEntry): void {
    const type: SetType = entryType(entry);
    if (type !== spec.type) {
      // ipset's own words for an entry of the wrong shape.
      const text = renderEntry(entry);
      const have = text.split(',').length;
      const want = elementsOf[spec.type];
      if (have < want) throw new Error(`Syntax error: ${have === 1 ? 'Second' : 'Third'} element is missing from ${text}.`);
      if (have > want) {
        throw new Error(`Syntax error: ${have - 1 === 1 ? 'Elem separator' : 'Two elem separators'} in ${text}, but settype ${spec.type} supports ${want === 1 ? 'none' : 'one'}.`);
      }
      throw new Error(`Syntax error: cannot parse ${text}`);
    }
    if (spec.type === 'bitmap:port') {
      if (entry.port! < spec.range[0] || entry.port! > spec.range[1]) throw new Error('Element is out of the range of the set');
      return;
    }
    if (entryFamily(entry) !== spec.family) {
      throw new Error(`Syntax error: cannot parse ${entry.ip}: resolving to ${spec.family === 'inet' ? 'IPv4' : 'IPv6'} address failed`);
    }
  }

  private ipOne(state: State, cmd: IpCommand): void {
    const link = state.links.get(cmd.device);
    const noDevice = (): Error => new Error(`Cannot find device "${cmd.device}"`);
    if (cmd.object === 'link') {
      if (cmd.verb === 'add') {
        if (link) throw new Error('RTNETLINK answers: File exists');
        state.links.set(cmd.device, { kind: cmd.kind, up: false, addresses: [] });
      } else if (!link) {
        throw noDevice();
      } else if (cmd.verb === 'del') {
        state.links.delete(cmd.device);
      } else {
        link.up = cmd.state === 'up';
      }
      return;
    }
    if (!link) throw noDevice();
    const i = link.addresses.indexOf(cmd.address);
    if (cmd.verb === 'add') {
      if (i >= 0) throw new Error('RTNETLINK answers: File exists');
      link.addresses.push(cmd.address);
    } else {
      if (i < 0) throw new Error('RTNETLINK answers: Cannot assign requested address');
      link.addresses.splice(i, 1);
    }
  }

  private sortedServices(): FakeVirtualService[] {
    return mergeSort([...this.state.services.values()], (a, b) => compareServices(a.key, b.key));
  }

  private sortedServers(svc: FakeVirtualService): FakeRealServer[] {
    return mergeSort(svc.servers, compareServers);
  }

  /** What `ipvsadm -Sn` prints. */
  ipvsadmSave(): string {
    let out = '';
    for (const svc of this.sortedServices()) {
      const where = serviceText(svc.key);
      let line = `-A ${where} -s ${svc.spec.scheduler}`;
      if (svc.spec.persistence !== undefined) line += ` -p ${svc.spec.persistence}`;
      if (svc.spec.flags?.length) line += ` -b ${flagText(svc.spec)}`;
      out += `${line}\n`;
      for (const r of this.sortedServers(svc)) out += `-a ${where} -r ${ipvsHostPort(r.address, r.port)} -m -w ${r.weight}\n`;
    }
    return out;
  }

  /** What `ipvsadm -Ln` prints (connection counts as set by setConnections); with `only`, `ipvsadm -Ln` of that service. */
  ipvsadmList(only?: ServiceKey): string {
    const header = 'Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n';
    let out = only ? header : `IP Virtual Server version 1.2.1 (size=4096)\n${header}`;
    const list = only ? [this.service(only)].filter((x): x is FakeVirtualService => x !== undefined) : this.sortedServices();
    for (const svc of list) {
      const k = svc.key;
      let line = isFwmark(k) ? `FWM  ${k.fwmark} ${k.family === 6 ? 'IPv6 ' : ''}${svc.spec.scheduler}`
        : `${protoName[k.protocol]} ${ipvsHostPort(k.address, k.port)} ${svc.spec.scheduler}`;
      if (svc.spec.flags?.length) line += ` (${flagText(svc.spec)})`;
      if (svc.spec.persistence !== undefined) line += ` persistent ${svc.spec.persistence}`;
      out += `${line}\n`;
      for (const r of this.sortedServers(svc)) {
        out += `  -> ${ipvsHostPort(r.address, r.port).padEnd(28)} ${'Masq'.padEnd(7)} ${String(r.weight).padEnd(6)} ${String(r.active).padEnd(10)} ${String(r.inactive).padEnd(10)}\n`;
      }
    }
    return out;
  }

  /** What /proc/net/ip_vs holds (services in the order created, real servers newest first; HZ 100). */
  procIpVs(): string {
    const hexIp = (ip: string): string => ip.includes(':')
      ? `[${addressValue(ip).toString(16).padStart(32, '0').match(/.{4}/g)!.join(':')}]`
      : ip.split('.').map((o) => Number(o).toString(16).toUpperCase().padStart(2, '0')).join('');
    const hexPort = (p: number): string => p.toString(16).toUpperCase().padStart(4, '0');
    let out = 'IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n';
    for (const svc of this.state.services.values()) {
      const k = svc.key;
      const head = isFwmark(k) ? `FWM  ${k.fwmark.toString(16).toUpperCase().padStart(8, '0')} ${svc.spec.scheduler} `
        : `${k.protocol.toUpperCase()}  ${hexIp(k.address)}:${hexPort(k.port)} ${svc.spec.scheduler} `;
      out += svc.spec.persistence !== undefined ? `${head}persistent ${svc.spec.persistence * 100} FFFFFFFF\n` : `${head}\n`;
      for (const r of svc.servers) {
        out += `  -> ${hexIp(r.address)}:${hexPort(r.port)}      Masq    ${r.weight}      ${r.active}          ${r.inactive}\n`;
      }
    }
    return out;
  }

  /** What `ipset save` prints (every set, in the order created). */
  ipsetSave(): string {
    let out = '';
    for (const [name, set] of this.state.sets) {
      const spec = set.spec;
      if (spec.type === 'bitmap:port') {
        out += `create ${name} bitmap:port range ${spec.range[0]}-${spec.range[1]}${spec.comment ? ' comment' : ''}\n`;
      } else {
        out += `create ${name} ${spec.type} family ${spec.family} hashsize ${spec.hashsize ?? setDefaults.hashsize} maxelem ${spec.maxelem ?? setDefaults.maxelem}` +
          `${spec.comment ? ' comment' : ''}${spec.skbinfo ? ' skbinfo' : ''} bucketsize 12 initval ${initval(name)}\n`;
      }
      let entries = [...set.entries];
      if (spec.type === 'bitmap:port') entries = entries.sort((a, b) => Number(a[0]) - Number(b[0]));
      for (const [entry, comment] of entries) {
        const mark = set.marks.get(entry);
        out += `add ${name} ${savedEntry(spec.type, entry)}${comment !== undefined ? ` comment "${comment}"` : ''}${mark ? ` skbmark ${renderSkbMark(mark)}` : ''}\n`;
      }
    }
    return out;
  }

  /**
   * Runs the tools the IPVS mode calls against this fake: `ipvsadm -R`,
   * `ipvsadm -Sn`, `ipvsadm -Ln`, `ipset restore [-exist]`, `ipset save`,
   * `ip -batch -`. A refused batch rejects with a ToolError as the real tool's would.
   */
  readonly exec: Exec = async (tool, args, input = ''): Promise<ExecResult> => {
    const name = tool.split('/').pop();
    const argv = args.join(' ');
    const ok = (stdout = ''): ExecResult => ({ stdout, stderr: '' });
    try {
      switch (`${name} ${argv}`) {
        case 'ipvsadm -R': {
          // As the real tool: a refused line is reported and skipped; the exit status is the last line's.
          const r = this.runIpvsadmLines(input);
          if (r.status !== 0) throw new ToolError(tool, args, r.status, r.stderr);
          return { stdout: '', stderr: r.stderr };
        }
        case 'ipvsadm -Sn':
          return ok(this.ipvsadmSave());
        case 'ipvsadm -Ln':
          return ok(this.ipvsadmList());
        case 'ipset restore':
        case 'ipset restore -exist':
          this.applyIpset(input, { exist: argv.endsWith('-exist') });
          return ok();
        case 'ipset save':
          return ok(this.ipsetSave());
        case 'ip -batch -':
          this.applyIp(input);
          return ok();
      }
    } catch (e) {
      if (e instanceof ToolError) throw e;
      throw new ToolError(tool, args, name === 'ipvsadm' ? 255 : 1, (e as Error).message);
    }
    throw new ToolError(tool, args, 2, `the fake IPVS kernel does not run ${tool} ${argv}`);
  };
}

// ipset prints a single-address net without its /32 (/128).
function savedEntry(type: SetType, entry: string): string {
  if (type !== 'hash:ip,port,net') return entry;
  const i = entry.lastIndexOf(',');
  const net = entry.slice(i + 1);
  return net.endsWith(net.includes(':') ? '/128' : '/32') ? entry.slice(0, i + 1) + net.slice(0, net.lastIndexOf('/')) : entry;
}

function flagText(spec: ServiceSpec): string {
  const order = spec.scheduler === 'sh' ? ['sh-fallback', 'sh-port'] : ['mh-fallback', 'mh-port'];
  return [...(spec.flags ?? [])].sort((a, b) => order.indexOf(a) - order.indexOf(b)).join(',');
}
