// The IPVS dataplane: virtual services by `ipvsadm -R`, the Service
// addresses on kube-ipvs0 by `ip -batch`, the per-Service data of a fixed
// handful of iptables rules in ipsets by `ipset restore`, one batch per tool
// per sync, planned from kproxy's own record (plan.ts).
//
// None of the three tools is all-or-nothing (README.md): `ipvsadm -R` skips
// a refused line and goes on, `ipset restore` and `ip -batch` stop at the
// first and keep what came before. So any failure, and any stderr from
// `ipvsadm -R` whatever its exit status, fails the sync: the record is
// forgotten, and the next (full) sync reads what the kernel holds and
// repairs it, as at start-up, where a previous kproxy's (or kube-proxy's
// IPVS mode's) state is adopted without a flush.
//
// Graceful termination: a TCP or SCTP real server that goes away keeps
// serving its connections at weight 0 and is deleted once none of them can
// carry data any more (no active connection, and the inactive ones, if any,
// only in TIME_WAIT or CLOSE: IPVS keeps those for minutes, and they need no
// server) or after --ipvs-graceful-termination-period; a
// virtual service whose port went away drains the same way. A UDP one goes
// at once. A drain checker reads the counts of the draining services only
// (`ipvsadm -Ln` per service, /proc/net/ip_vs when many drain) about once a
// second, between syncs.
//
// Changes others make are found by checkDrift() every sync period (chains,
// set sizes, addresses, a few virtual services in turn; the whole IPVS
// table only now and then) and repaired by the next full sync; IPVS makes
// no events to watch, so there is no watchDrift().
import { ToolError, hostExec, type Exec } from '../../lib/exec.ts';
import type { Logger } from '../../lib/log.ts';
import { inCIDR, ofFamily } from '../../lib/net.ts';
import type { Changes, Family, NodeState } from '../../proxy/model.ts';
import type { Backend, Damage, DriftReport, ModeOptions } from '../backend.ts';
import { AppliedRecord } from '../record.ts';
import { PendingRepairs, type Finding } from '../repairs.ts';
import { LineBatch } from './batch.ts';
import { ipLines, type IpCommand } from './ip-batch.ts';
import { ipsetLines, renderIpset, type IpsetCommand } from './ipset.ts';
import { iptablesTool } from './iptables.ts';
import {
  ipvsLines, isFwmark, renderIpvs, schedulers, serviceFamily, serviceText, vsId,
  type IpvsCommand, type ServiceKey,
} from './ipvsadm.ts';
import {
  nodeAddresses, readAddresses, readIpvsTable, readSave, readServiceListing, readSets, serversWithLiveConnections,
  type ServerCounts,
} from './kernel-read.ts';
import { builtinJumps, layoutChains, type BuiltinJump, type LayoutOptions } from './layout.ts';
import {
  dummyDevice, fwmarkOf, kubeProxyLeftoverChains, kubeProxyLeftoverSets, maxFwmarkId, setName, setNames, setRoles, setSpec,
} from './names.ts';
import { hashedFwmark, planSync, scratchSet, withNodeIPs, type FullInputs, type IpvsPlan, type PlanOptions } from './plan.ts';
import { missingSchedulers } from './probe.ts';
import { parseProcIpVs, type ProcFwmarkService } from './proc-ip-vs.ts';
import { portWant, RefusedPortError, type PortContext } from './service-port.ts';
import { ipvsSettingsOf, type IpvsSettings } from './settings.ts';
import { memberCommand, serverId, serverOf, type IpvsRecord, type KernelView, type NodeAddresses, type VsState } from './state.ts';
import { ensureSysctls, ensureTimeouts, wantedSysctls } from './sysctl.ts';
import { detectVariant, type Variant } from './variant.ts';

/** Injected for tests: the clock and the drain checker's period. */
export interface IpvsBackendHooks {
  readonly now?: () => number;
  readonly drainCheckMs?: number;
}

const tables = ['mangle', 'nat', 'filter'] as const;

/** checkDrift compares the whole IPVS table with the record every this many checks (5 minutes at the default period). */
const wholeTableEvery = 10;

export class IpvsBackend implements Backend<IpvsPlan> {
  readonly mode = 'ipvs' as const;
  private readonly log: Logger;
  private readonly exec: Exec;
  private readonly families: readonly Family[];
  private readonly settings: IpvsSettings;
  private readonly layout = new Map<Family, LayoutOptions>();
  private readonly nodePortCIDRs: readonly string[];
  private readonly masqueradeBit: number;
  private readonly now: () => number;
  private readonly drainCheckMs: number;
  private readonly applied = new AppliedRecord<IpvsRecord>();
  private variant: Variant | undefined;
  private started = false;
  private missing = new Set<string>();
  /** Read by prepare() for the next full plan. */
  private fullInputs: FullInputs | undefined;
  /** A sync is between prepare() and the end of apply(): the drain checker keeps out. */
  private syncing = false;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;
  private drainRun: Promise<void> | undefined;
  private closed = false;
  private driftCursor = 0;
  private driftChecks = 0;
  /** Changes others made, found by checkDrift and repaired by the next full sync. */
  private readonly pending = new PendingRepairs<Damage>();

  constructor(opts: ModeOptions, log: Logger, hooks: IpvsBackendHooks = {}) {
    this.log = log;
    this.exec = opts.exec ?? hostExec;
    this.families = [...opts.families].sort();
    this.settings = ipvsSettingsOf(opts.settings);
    this.nodePortCIDRs = opts.nodePortAddresses;
    this.masqueradeBit = opts.masqueradeBit;
    this.now = hooks.now ?? Date.now;
    this.drainCheckMs = hooks.drainCheckMs ?? 1000;
    const mark = `0x${(1 << opts.masqueradeBit >>> 0).toString(16)}`;
    for (const f of this.families) {
      this.layout.set(f, { family: f, clusterCIDR: ofFamily(opts.clusterCIDRs, f)[0] ?? '', masqueradeAll: opts.masqueradeAll, mark });
    }
  }

  private planOptions(): PlanOptions {
    return {
      families: this.families, layout: this.layout, defaultScheduler: this.settings.scheduler, missingSchedulers: this.missing,
      masqueradeBit: this.masqueradeBit, nodePortCIDRs: this.nodePortCIDRs, graceMs: this.settings.graceMs, now: this.now(),
    };
  }

  private async getVariant(): Promise<Variant> {
    this.variant ??= await detectVariant(this.exec);
    return this.variant;
  }

  private excluded(ip: string): boolean {
    return this.settings.excludeCIDRs.some((c) => c.includes(':') === ip.includes(':') && inCIDR(ip, c));
  }

  /** Once: kernel settings, IPVS timeouts, which schedulers the kernel has. */
  private async start(): Promise<void> {
    try {
      await ensureSysctls(this.exec, wantedSysctls(this.settings), this.log);
    } catch (err) {
      this.log.error({ err }, 'could not set the kernel settings the IPVS mode needs; going on');
    }
    try {
      await ensureTimeouts(this.exec, this.settings.timeouts, this.log);
    } catch (err) {
      this.log.error({ err }, 'could not set the IPVS timeouts; going on');
    }
    try {
      this.missing = await missingSchedulers(this.exec, schedulers.filter((s) => s !== this.settings.scheduler), this.masqueradeBit);
      if (this.missing.size) this.log.info({ missing: [...this.missing] }, 'IPVS schedulers whose kernel module is missing: Services asking for them get the default');
    } catch (err) {
      this.log.warn({ err }, 'could not ask the kernel which IPVS schedulers it has');
    }
    this.started = true;
  }

  /** What a full plan needs: the node's addresses, the chains' jumps, the sets, and (without a record) the kernel's state. */
  private async readForFull(): Promise<FullInputs> {
    const variant = await this.getVariant();
    const addrList = readAddresses((await this.exec('ip', ['-o', 'addr', 'show'])).stdout);
    const nodeAddrs = nodeAddresses(addrList, this.nodePortCIDRs);
    const missingJumps = new Map<Family, BuiltinJump[]>();
    for (const f of this.families) {
      const save = readSave((await this.exec(iptablesTool(f, variant, '-save'), [])).stdout);
      missingJumps.set(f, builtinJumps(this.layout.get(f)!).filter((j) => !(save.chains.get(`${j.table} ${j.from}`) ?? []).includes(j.rule)));
    }
    const names = new Set((await this.exec('ipset', ['list', '-n'])).stdout.split('\n').filter(Boolean));
    if (this.applied.current) return { nodeAddrs, missingJumps, setNames: names };
    return { nodeAddrs, missingJumps, setNames: names, kernel: await this.readKernelView(addrList.dummy, nodeAddrs) };
  }

  /** The kernel's virtual services, each marked as kproxy's or not, for a plan without a record. */
  private async readKernelView(dummyAddrs: ReadonlySet<string>, nodeAddrs: NodeAddresses): Promise<KernelView> {
    const [table, sets, links] = await Promise.all([
      this.exec('ipvsadm', ['-Sn']).then((r) => readIpvsTable(r.stdout)),
      this.exec('ipset', ['save']).then((r) => readSets(r.stdout)),
      this.exec('ip', ['-o', 'link', 'show']).then((r) => r.stdout),
    ]);
    const dummyExists = new RegExp(`^\\d+: ${dummyDevice}[:@]`, 'm').test(links);
    const marks = new Set(sets.marks.values());
    const vs = new Map<string, VsState & { foreign: boolean }>();
    for (const [id, e] of table.services) {
      const owned = this.owns(e.key, dummyAddrs, sets.nodePorts, marks);
      vs.set(id, { key: e.key, protocol: isFwmark(e.key) ? 'tcp' : e.key.protocol, spec: e.spec, servers: e.servers, foreign: !owned });
    }
    if (table.unreadable.size) this.log.warn({ virtualServices: [...table.unreadable].slice(0, 10) }, 'virtual services with real servers kproxy does not write (not masquerading): left alone');
    return { vs, dummyExists, dummyAddrs, nodeAddrs, setNames: sets.names, marks: sets.marks };
  }

  /**
   * Whether a virtual service is kproxy's: on an address of kube-ipvs0, or on
   * a port of its NodePort sets, or marked as its mark sets say; never one
   * whose address is within --ipvs-exclude-cidrs.
   */
  private owns(key: ServiceKey, dummy: ReadonlySet<string>, nodePorts: ReadonlyMap<string, ReadonlySet<number>>, marks: ReadonlySet<number>): boolean {
    if (isFwmark(key)) return marks.has(key.fwmark) || key.fwmark > fwmarkOf(maxFwmarkId() - 20, this.masqueradeBit);
    if (this.excluded(key.address)) return false;
    return dummy.has(key.address) || (nodePorts.get(`${serviceFamily(key)} ${key.protocol}`)?.has(key.port) ?? false);
  }

  async prepare(changes: Changes): Promise<void> {
    await this.drainRun;
    this.syncing = true;
    if (!this.started) await this.start();
    this.fullInputs = this.applied.needsFull(changes.full) ? await this.readForFull() : undefined;
  }

  plan(state: NodeState, changes: Changes): IpvsPlan {
    const full = this.applied.needsFull(changes.full);
    const plan = planSync(state, changes, this.applied.current, this.planOptions(), full ? this.fullInputs : undefined);
    // A full plan repairs whatever checkDrift found before it was made.
    const repairing = full && !this.pending.empty ? this.pending.snapshot() : undefined;
    return repairing ? { ...plan, repairing, repairs: PendingRepairs.repairsOf(repairing, true) } : plan;
  }

  async apply(plan: IpvsPlan): Promise<void> {
    try {
      await this.applied.apply(plan, () => this.send(plan));
    } catch (err) {
      this.fullInputs = undefined;
      this.log.error({ err, full: plan.full }, 'IPVS sync failed; the next sync reads the kernel and is full');
      throw err;
    } finally {
      this.syncing = false;
    }
    this.fullInputs = undefined;
    if (plan.repairing) this.pending.settle(plan.repairing, true);
    this.log.debug({ full: plan.full, ...plan.counts }, 'IPVS sync applied');
    this.scheduleDrain();
  }

  /** The batches of one plan: [ipset, then iptables] beside [ipvsadm -R, then ip -batch]. */
  private async send(plan: IpvsPlan): Promise<void> {
    const variant = await this.getVariant();
    const netfilter = async (): Promise<void> => {
      if (plan.ipset) await this.exec('ipset', plan.ipsetExist ? ['restore', '-exist'] : ['restore'], plan.ipset);
      for (const [f, text] of plan.iptables) if (text) await this.exec(iptablesTool(f, variant, '-restore'), ['--noflush', '-w'], text);
    };
    const ipvs = async (): Promise<void> => {
      if (plan.ipvsadm) await this.ipvsadmRestore(plan.ipvsadm);
      if (plan.ip) await this.exec('ip', ['-batch', '-'], plan.ip);
    };
    const results = await Promise.allSettled([netfilter(), ipvs()]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** `ipvsadm -R`: anything on stderr is a failure, whatever the exit status (it is the last line's). */
  private async ipvsadmRestore(batch: string): Promise<void> {
    const r = await this.exec('ipvsadm', ['-R'], batch);
    if (r.stderr.trim() !== '') throw new ToolError('ipvsadm', ['-R'], 0, r.stderr);
  }

  owned(): Record<string, number> {
    const rec = this.applied.current;
    if (!rec) return {};
    let realServers = 0;
    for (const v of rec.vs.values()) realServers += v.servers.size;
    let entries = rec.addrs.size;
    for (const m of rec.sets.values()) entries += m.size;
    let rules = 0;
    for (const f of this.families) rules += layoutChains(this.layout.get(f)!).reduce((n, c) => n + c.rules.length, 0);
    return { virtualServers: rec.vs.size, realServers, ipsetEntries: entries, addresses: rec.addrs.size, iptablesRules: rules };
  }

  /** The record a fresh full sync of `state` would leave (for dump and describe). */
  private desired(state: NodeState): { plan: IpvsPlan; record: IpvsRecord } {
    const local = { 4: ofFamily(state.nodeIPs, 4), 6: ofFamily(state.nodeIPs, 6) };
    const nodeAddrs = withNodeIPs({ local, nodePort: { 4: [], 6: [] } }, state.nodeIPs, this.nodePortCIDRs);
    const missingJumps = new Map(this.families.map((f) => [f, builtinJumps(this.layout.get(f)!)]));
    const kernel: KernelView = { vs: new Map(), dummyExists: false, dummyAddrs: new Set(), nodeAddrs, setNames: new Set(), marks: new Map() };
    const plan = planSync(state, { full: true, services: new Set(), staleUdpEndpoints: [], staleUdpServiceIPs: [] }, undefined,
      { ...this.planOptions(), now: 0 }, { kernel, nodeAddrs, missingJumps, setNames: new Set() });
    return { plan, record: plan.commit() };
  }

  render(state: NodeState): string {
    const { plan, record } = this.desired(state);
    const out: string[] = [`# ip -batch - (${dummyDevice})`];
    for (const a of record.addrs.keys()) out.push(renderIpLine({ verb: 'add', object: 'address', device: dummyDevice, address: a }));
    out.push('# ipset restore');
    for (const f of this.families) {
      for (const r of setRoles) {
        const name = setName(r, f);
        out.push(renderIpset({ verb: 'create', set: name, spec: setSpec(r, f) }));
        if (r === 'ipvsIPs') {
          for (const a of record.addrs.keys()) if ((a.includes(':') ? 6 : 4) === f) out.push(renderIpset({ verb: 'add', set: name, entry: { ip: a } }));
        } else {
          for (const id of record.sets.get(name)?.keys() ?? []) out.push(renderIpset(memberCommand(id, 'add')));
        }
      }
    }
    out.push('# ipvsadm -R');
    for (const v of record.vs.values()) out.push(...vsLines(v));
    for (const f of this.families) {
      out.push(`# ${f === 4 ? 'iptables' : 'ip6tables'}-restore --noflush -w`);
      out.push(plan.iptables.get(f)?.trimEnd() ?? '');
    }
    return `${out.join('\n')}\n`;
  }

  /** One service port's virtual services, set members and kube-ipvs0 addresses (NodePorts on the Node object's addresses). */
  describeService(state: NodeState, key: string): string[] {
    const s = state.services.get(key);
    if (!s || !this.families.includes(s.family)) return [];
    const f = s.family;
    const nodeAddrs = withNodeIPs({ local: { 4: [], 6: [] }, nodePort: { 4: [], 6: [] } }, state.nodeIPs, this.nodePortCIDRs);
    const ctx: PortContext = {
      family: f, nodePortAddrs: nodeAddrs.nodePort[f], localAddrs: new Set(ofFamily(state.nodeIPs, f)),
      defaultScheduler: this.settings.scheduler, missingSchedulers: this.missing, masqueradeBit: this.masqueradeBit,
      fwmark: (k) => this.applied.current?.fwmarks.get(k) ?? hashedFwmark(k, this.masqueradeBit),
    };
    let want;
    try {
      want = portWant(s, ctx);
    } catch (e) {
      if (e instanceof RefusedPortError) return [`# left out: ${e.message}`];
      throw e;
    }
    const out: string[] = [];
    for (const v of want.vs) {
      out.push(renderIpvs({ verb: 'add', object: 'service', service: v.key, spec: v.spec }));
      for (const server of v.servers) out.push(renderIpvs({ verb: 'add', object: 'server', service: v.key, server, weight: 1 }));
    }
    for (const e of want.entries) out.push(renderIpset({ verb: 'add', set: e.set, entry: e.entry, ...(e.skbmark ? { skbmark: e.skbmark } : {}) }));
    for (const a of want.addrs) {
      out.push(renderIpset({ verb: 'add', set: setName('ipvsIPs', f), entry: { ip: a } }));
      out.push(renderIpLine({ verb: 'add', object: 'address', device: dummyDevice, address: a }));
    }
    for (const w of want.warnings) out.push(`# ${w}`);
    return out;
  }

  /** The port's virtual services as the kernel holds them now: weights, active and inactive connections. */
  async describeLive(state: NodeState, key: string): Promise<string[]> {
    const s = state.services.get(key);
    if (!s || !this.families.includes(s.family)) return [];
    const out: string[] = [];
    for (const line of this.describeService(state, key)) {
      if (!line.startsWith('-A ')) continue;
      const svc = line.slice(3).split(' -s ')[0];
      try {
        const { stdout } = await this.exec('ipvsadm', ['-Ln', ...svc.split(' ')]);
        out.push(...stdout.split('\n').slice(2).filter(Boolean));
      } catch (e) {
        const lines = (e instanceof ToolError ? e.stderr : (e as Error).message).split('\n').map((l) => l.trim()).filter(Boolean);
        const noIpvs = lines.find((l) => /initialize ipvs/.test(l));
        if (noIpvs) throw new Error(`this kernel has no IPVS (ipvsadm: ${noIpvs})`);
        out.push(`${svc}: ${lines[0] ?? 'no answer'}`);
      }
    }
    return [`ipvs in the kernel now (${out.length} lines):`, ...out.map((l) => `  ${l}`)];
  }

  async readKernel(): Promise<string> {
    const variant = await this.getVariant();
    const addrList = readAddresses((await this.exec('ip', ['-o', 'addr', 'show'])).stdout);
    const savedText = (await this.exec('ipset', ['save'])).stdout;
    const sets = readSets(savedText);
    const table = readIpvsTable((await this.exec('ipvsadm', ['-Sn'])).stdout);
    const marks = new Set(sets.marks.values());
    const out: string[] = ['# ipvsadm -Sn (kproxy\'s virtual services)'];
    for (const [, e] of [...table.services].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      if (!this.owns(e.key, addrList.dummy, sets.nodePorts, marks)) continue;
      out.push(...vsLines(e));
    }
    out.push(`# ip -o addr show dev ${dummyDevice}`);
    for (const a of [...addrList.dummy].sort()) out.push(renderIpLine({ verb: 'add', object: 'address', device: dummyDevice, address: a }));
    out.push('# ipset save (kproxy\'s sets)');
    const mine = new Set(this.families.flatMap((f) => setNames(f)));
    const saved = savedText.split('\n').filter((l) => mine.has(l.split(' ', 3)[1]));
    out.push(...saved.map((l) => l.replace(/ bucketsize \d+ initval 0x[0-9a-f]+$/, '').replace(/ hashsize \d+ maxelem \d+/, '')));
    for (const f of this.families) {
      const save = readSave((await this.exec(iptablesTool(f, variant, '-save'), [])).stdout);
      out.push(`# ${f === 4 ? 'iptables' : 'ip6tables'}-save (kproxy's chains)`);
      for (const c of layoutChains(this.layout.get(f)!)) {
        const rules = save.chains.get(`${c.table} ${c.name}`);
        if (!rules) continue;
        out.push(`*${c.table} :${c.name}`);
        for (const r of rules) out.push(`-A ${c.name} ${r}`);
      }
      for (const j of builtinJumps(this.layout.get(f)!)) {
        if ((save.chains.get(`${j.table} ${j.from}`) ?? []).includes(j.rule)) out.push(`*${j.table} -A ${j.from} ${j.rule}`);
      }
    }
    return `${out.join('\n')}\n`;
  }

  /**
   * The periodic check for changes someone else made: the few chains
   * (compared whole) and their jumps, every set's entry count (`ipset list
   * -t`), the addresses of kube-ipvs0 and the node's own, and three virtual
   * services in turn against the record; the whole IPVS table only every
   * wholeTableEvery checks, or when something else was found changed. What it finds is repaired by the next sync, a full one: from the
   * record when only chains or sets changed (every set is swapped in anew,
   * the chains restored); when virtual services or addresses changed the
   * record is dropped and that sync reads the kernel first.
   */
  async checkDrift(): Promise<DriftReport> {
    const rec = this.applied.current;
    if (!rec || this.syncing) return { damage: [] };
    const found = await this.findDrift(rec);
    // A sync that began meanwhile may have made (or seen) what was read: the next check decides.
    if (found.length === 0 || this.syncing || this.applied.current !== rec) return { damage: [] };
    const damage = this.pending.add(found);
    if (damage.length === 0) return { damage: [] };
    const deep = found.some((x) => x.damage.what === 'virtual-server' || x.damage.what === 'address');
    if (deep) this.applied.forget();
    return {
      damage,
      full: deep ? 'IPVS virtual services or addresses changed: the kernel is read again' : 'kproxy\'s chains or sets changed: rewritten from the record',
    };
  }

  private async findDrift(rec: IpvsRecord): Promise<Finding[]> {
    const found: Finding[] = [];
    const note = (key: string, what: string, object: string): void => { found.push({ key, damage: { what, object } }); };
    const variant = await this.getVariant();
    for (const f of this.families) {
      const save = readSave((await this.exec(iptablesTool(f, variant, '-save'), [])).stdout);
      for (const c of layoutChains(this.layout.get(f)!)) {
        const have = save.chains.get(`${c.table} ${c.name}`);
        if (!have || have.join('\n') !== c.rules.join('\n')) note(`chain ${f} ${c.table} ${c.name}`, 'chain', `${f === 4 ? 'ip' : 'ip6'} ${c.table} ${c.name}`);
      }
      for (const j of builtinJumps(this.layout.get(f)!)) {
        if (!(save.chains.get(`${j.table} ${j.from}`) ?? []).includes(j.rule)) note(`jump ${f} ${j.table} ${j.from} ${j.rule}`, 'jump', `${f === 4 ? 'ip' : 'ip6'} ${j.table} ${j.from} -A ${j.rule}`);
      }
    }
    const counts = new Map<string, number>();
    let name = '';
    for (const line of (await this.exec('ipset', ['list', '-t'])).stdout.split('\n')) {
      if (line.startsWith('Name: ')) name = line.slice(6).trim();
      else if (line.startsWith('Number of entries: ')) counts.set(name, Number(line.slice(19)));
    }
    for (const f of this.families) {
      for (const r of setRoles) {
        const set = setName(r, f);
        const want = r === 'ipvsIPs' ? [...rec.addrs.keys()].filter((a) => (a.includes(':') ? 6 : 4) === f).length : rec.sets.get(set)?.size ?? 0;
        const have = counts.get(set);
        if (have !== want) note(`set ${set}`, 'set', `${set}: ${have ?? 'no set'} entries, not ${want}`);
      }
    }
    const addrList = readAddresses((await this.exec('ip', ['-o', 'addr', 'show'])).stdout);
    if (addrList.dummy.size !== rec.addrs.size || [...rec.addrs.keys()].some((a) => !addrList.dummy.has(a))) {
      note(`address ${dummyDevice}`, 'address', `${dummyDevice}: ${addrList.dummy.size} addresses, not ${rec.addrs.size}`);
    }
    const node = nodeAddresses(addrList, this.nodePortCIDRs);
    for (const f of this.families) {
      if (node.nodePort[f].join() !== rec.nodeAddrs.nodePort[f].join() && node.nodePort[f].length > 0) note(`address node ${f}`, 'address', `the node's IPv${f} addresses for NodePorts`);
    }
    // The whole IPVS table (one read of /proc/net/ip_vs: seconds at 10,000
    // services in user-mode-linux) every wholeTableEvery checks, and at once
    // when something else was found changed; a few services in turn otherwise.
    if (++this.driftChecks % wholeTableEvery === 0 || found.length > 0) {
      const table = await this.readProcTable();
      for (const [id, v] of rec.vs) {
        const have = table.get(id);
        const same = have !== undefined && have.size === v.servers.size && [...v.servers].every(([sid, w]) => have.get(sid)?.weight === w);
        if (!same) note(`vs ${id}`, 'virtual-server', `${serviceText(v.key)} (${have ? 'real servers changed' : 'gone'})`);
      }
      return found;
    }
    const ids = [...rec.vs.keys()];
    for (let i = 0; i < Math.min(3, ids.length); i++) {
      const id = ids[(this.driftCursor++) % ids.length];
      const v = rec.vs.get(id)!;
      let listing: Map<string, ServerCounts> | undefined;
      try {
        listing = readServiceListing((await this.exec('ipvsadm', ['-Ln', ...serviceText(v.key).split(' ')])).stdout);
      } catch {
        listing = undefined;
      }
      const same = listing !== undefined && listing.size === v.servers.size && [...v.servers].every(([sid, w]) => listing.get(sid)?.weight === w);
      if (!same) note(`vs ${id}`, 'virtual-server', `${serviceText(v.key)} (${listing ? 'real servers changed' : 'gone'})`);
    }
    return found;
  }

  // ---- graceful termination ----

  private scheduleDrain(): void {
    if (this.closed || this.drainTimer || !this.applied.current?.draining.size) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      this.drainRun = this.drainOnce().finally(() => {
        this.drainRun = undefined;
        this.scheduleDrain();
      });
    }, this.drainCheckMs);
    this.drainTimer.unref?.();
  }

  /** Deletes the draining real servers (and drained virtual services) that are done. Runs between syncs. */
  async drainOnce(): Promise<void> {
    const rec = this.applied.current;
    if (!rec || this.syncing || rec.draining.size === 0) return;
    const now = this.now();
    const ids = [...rec.draining];
    let counts: Map<string, Map<string, ServerCounts>>;
    try {
      counts = await this.drainCounts(rec, ids);
    } catch (err) {
      this.log.warn({ err }, 'could not read the connection counts of draining real servers');
      return;
    }
    // A server with only inactive connections is done once none of them can carry data
    // (TIME_WAIT lasts two minutes and needs no server); read the connection table only then.
    const waiting = new Set<string>();
    for (const id of ids) {
      for (const [sid, until] of rec.vs.get(id)?.drain ?? []) {
        const n = counts.get(id)?.get(sid);
        if (n && n.active === 0 && n.inactive > 0 && now < until) waiting.add(sid);
      }
    }
    let live = new Set<string>();
    if (waiting.size) {
      try {
        live = serversWithLiveConnections((await this.exec('cat', ['/proc/net/ip_vs_conn'])).stdout, waiting);
      } catch (err) {
        this.log.warn({ err }, 'could not read the IPVS connections of draining real servers');
        live = waiting;
      }
    }
    if (this.syncing || this.applied.current !== rec) return;
    const ipvs = new LineBatch<IpvsCommand>(ipvsLines);
    const ip = new LineBatch<IpCommand>(ipLines);
    const ipset = new LineBatch<IpsetCommand>(ipsetLines);
    const updates = new Map<string, VsState | undefined>();
    const releases: string[] = [];
    for (const id of ids) {
      const v = rec.vs.get(id);
      if (!v) continue;
      const c = counts.get(id);
      const servers = new Map(v.servers);
      const drain = new Map(v.drain);
      for (const [sid, until] of v.drain ?? []) {
        const n = c?.get(sid);
        if (n && (n.active > 0 || live.has(sid)) && now < until) continue;
        if (n) ipvs.addChecked({ verb: 'delete', object: 'server', service: v.key, server: serverOf(sid) });
        servers.delete(sid);
        drain.delete(sid);
      }
      if (v.owner === undefined && servers.size === 0) {
        if (c !== undefined) ipvs.addChecked({ verb: 'delete', object: 'service', service: v.key });
        updates.set(id, undefined);
        const a = !isFwmark(v.key) && !rec.nodeAddrs.local[serviceFamily(v.key)].includes(v.key.address) ? v.key.address : undefined;
        if (a) releases.push(a);
      } else if (servers.size !== v.servers.size) {
        const { drain: _, ...rest } = v;
        updates.set(id, drain.size ? { ...rest, servers, drain } : { ...rest, servers });
      }
    }
    if (updates.size === 0) return;
    const addrs = new Map(rec.addrs);
    for (const a of releases) {
      const n = addrs.get(a) ?? 0;
      if (n > 1) addrs.set(a, n - 1);
      else if (n === 1) {
        addrs.delete(a);
        ip.addChecked({ verb: 'del', object: 'address', device: dummyDevice, address: a });
        ipset.addChecked({ verb: 'del', set: setName('ipvsIPs', a.includes(':') ? 6 : 4), entry: { ip: a } });
      }
    }
    this.syncing = true;
    try {
      if (ipvs.size) await this.ipvsadmRestore(ipvs.toString());
      if (ip.size) await this.exec('ip', ['-batch', '-'], ip.toString());
      if (ipset.size) await this.exec('ipset', ['restore'], ipset.toString());
    } catch (err) {
      this.log.error({ err }, 'removing drained real servers failed; the next sync reads the kernel and is full');
      this.applied.forget();
      return;
    } finally {
      this.syncing = false;
    }
    for (const [id, v] of updates) {
      if (v) rec.vs.set(id, v);
      else rec.vs.delete(id);
      if (!v?.drain?.size) rec.draining.delete(id);
    }
    rec.addrs.clear();
    for (const [a, n] of addrs) rec.addrs.set(a, n);
    this.log.debug({ removed: ipvs.size }, 'drained real servers removed');
  }

  /** Connection counts of the draining virtual services: one `ipvsadm -Ln` each when few, /proc/net/ip_vs when many. */
  private async drainCounts(rec: IpvsRecord, ids: readonly string[]): Promise<Map<string, Map<string, ServerCounts>>> {
    const out = new Map<string, Map<string, ServerCounts>>();
    if (ids.length <= 8) {
      for (const id of ids) {
        const v = rec.vs.get(id);
        if (!v) continue;
        try {
          out.set(id, readServiceListing((await this.exec('ipvsadm', ['-Ln', ...serviceText(v.key).split(' ')])).stdout));
        } catch (e) {
          if (!(e instanceof ToolError)) throw e;
          // gone from the kernel: nothing left to drain
        }
      }
      return out;
    }
    return this.readProcTable();
  }

  /** Every virtual service's real servers with weights and connection counts, by record id, from /proc/net/ip_vs. */
  private async readProcTable(): Promise<Map<string, Map<string, ServerCounts>>> {
    const out = new Map<string, Map<string, ServerCounts>>();
    const fwmarks: ProcFwmarkService[] = [];
    const toCounts = (servers: readonly { address: string; port: number; weight: number; active: number; inactive: number }[]): Map<string, ServerCounts> =>
      new Map(servers.map((s) => [serverId(s.address, s.port), { weight: s.weight, active: s.active, inactive: s.inactive }]));
    for (const s of parseProcIpVs((await this.exec('cat', ['/proc/net/ip_vs'])).stdout, fwmarks)) out.set(vsId(s.service), toCounts(s.servers));
    for (const m of fwmarks) for (const f of [4, 6]) out.set(`fwm ${m.fwmark} ${f}`, toCounts(m.servers));
    return out;
  }

  // ---- cleanup ----

  async cleanup(): Promise<void> {
    const problems: string[] = [];
    const step = async (what: string, f: () => Promise<void>): Promise<void> => {
      try {
        await f();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    let setFacts = readSets('');
    await step('ipset save', async () => { setFacts = readSets((await this.exec('ipset', ['save'])).stdout); });
    let addrList = readAddresses('');
    await step('ip addr', async () => { addrList = readAddresses((await this.exec('ip', ['-o', 'addr', 'show'])).stdout); });
    // The virtual services, when this kernel has IPVS at all.
    let table;
    try {
      table = readIpvsTable((await this.exec('ipvsadm', ['-Sn'])).stdout);
    } catch (err) {
      this.log.debug({ err }, 'no IPVS in this kernel (or no ipvsadm): no virtual service to remove');
    }
    if (table) {
      const marks = new Set(setFacts.marks.values());
      const batch = new LineBatch<IpvsCommand>(ipvsLines);
      for (const e of table.services.values()) if (this.owns(e.key, addrList.dummy, setFacts.nodePorts, marks)) batch.addChecked({ verb: 'delete', object: 'service', service: e.key });
      if (batch.size) await step('ipvsadm -R', () => this.ipvsadmRestore(batch.toString()));
    }
    // The chains, in every variant that holds them.
    const mine = new Set([...layoutChains({ family: 4, clusterCIDR: '', masqueradeAll: false, mark: '0x4000' }).map((c) => `${c.table} ${c.name}`),
      ...kubeProxyLeftoverChains.map((c) => `${c.table} ${c.name}`)]);
    for (const variant of ['legacy', 'nft'] as const) {
      for (const f of [4, 6] as const) {
        let save;
        try {
          save = readSave((await this.exec(iptablesTool(f, variant, '-save'), [])).stdout);
        } catch {
          continue; // this variant does not work here
        }
        const lines: string[] = [];
        for (const table of tables) {
          const owned = [...save.chains.keys()].filter((k) => k.startsWith(`${table} `) && mine.has(k)).map((k) => k.slice(table.length + 1));
          const jumps: string[] = [];
          for (const [k, rules] of save.chains) {
            if (!k.startsWith(`${table} `)) continue;
            const chain = k.slice(table.length + 1);
            if (mine.has(k)) continue;
            for (const r of rules) {
              const j = / -j (\S+)$/.exec(` ${r}`) ?? / -j (\S+) /.exec(` ${r} `);
              if (j && mine.has(`${table} ${j[1]}`)) jumps.push(`-D ${chain} ${r}`);
            }
          }
          if (!owned.length && !jumps.length) continue;
          lines.push(`*${table}`, ...owned.map((c) => `:${c} - [0:0]`), ...jumps, ...owned.map((c) => `-X ${c}`), 'COMMIT');
        }
        if (lines.length) await step(`${iptablesTool(f, variant, '-restore')}`, async () => { await this.exec(iptablesTool(f, variant, '-restore'), ['--noflush', '-w'], `${lines.join('\n')}\n`); });
      }
    }
    // The sets, now that no rule names them.
    const ours = new Set([...setNames(4), ...setNames(6), ...kubeProxyLeftoverSets]);
    for (const f of [4, 6] as const) for (let i = 0; i < setRoles.length; i++) ours.add(scratchSet(f, i));
    const destroy = [...setFacts.names].filter((n) => ours.has(n));
    if (destroy.length) await step('ipset destroy', async () => { await this.exec('ipset', ['restore'], destroy.map((n) => `destroy ${n}`).join('\n') + '\n'); });
    // kube-ipvs0 and its addresses.
    await step(`ip link del ${dummyDevice}`, async () => {
      const links = (await this.exec('ip', ['-o', 'link', 'show'])).stdout;
      if (new RegExp(`^\\d+: ${dummyDevice}[:@]`, 'm').test(links)) await this.exec('ip', ['link', 'del', dummyDevice]);
    });
    this.applied.forget();
    if (problems.length) throw new ToolError('ipvs cleanup', [], 1, problems.join('; '));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    await this.drainRun;
  }
}

function vsLines(v: Pick<VsState, 'key' | 'spec' | 'servers'>): string[] {
  const out = [renderIpvs({ verb: 'add', object: 'service', service: v.key, spec: v.spec })];
  for (const [sid, weight] of v.servers) out.push(renderIpvs({ verb: 'add', object: 'server', service: v.key, server: serverOf(sid), weight }));
  return out;
}

function renderIpLine(cmd: IpCommand): string {
  const b = new LineBatch(ipLines).add(cmd);
  if (b.error) throw b.error;
  return b.toString().trimEnd();
}
