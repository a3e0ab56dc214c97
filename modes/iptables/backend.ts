// The iptables dataplane: one `iptables-restore --noflush -w` batch per
// sync per IP family, plus at most one `ipset restore` batch, in
// kube-proxy's chain layout. Changes someone else makes to kproxy's chains
// are found by nf_tables events (iptables-nft) and a periodic check
// (drift.ts), and repaired chain by chain through the same plan and apply.
import type { Logger } from '../../lib/log.ts';
import { ofFamily } from '../../lib/net.ts';
import type { Changes, Family, NodeState } from '../../proxy/model.ts';
import type { Backend, DriftReport, DriftWatch, ModeOptions, Plan } from '../backend.ts';
import { driftListener, NftMonitor } from '../nft-monitor.ts';
import { AppliedRecord } from '../record.ts';
import { PendingRepairs, type Finding, type RepairSnapshot } from '../repairs.ts';
import { hostExec, ToolError, type Exec } from '../../lib/exec.ts';
import { describeServicePort } from './describe.ts';
import {
  builtinChainsWithJumps, chainFinding, compareSaved, damageFromEvents, digestSave, expectedDigests, intactCanary,
  jumpFinding, missingJumpsInListing, type IptDamage, type SavedTable,
} from './drift.ts';
import { builtinJumps, canaryRule, type BuiltinJump, type FamilyOptions, type Table } from './layout.ts';
import { chains, loopbackSet, serviceChainPrefixes } from './names.ts';
import { isOwnedChain, isOwnedJump, ownedView, parseSave } from './owned.ts';
import { FamilyRecord, planFull, planPartial, scratchSet, type FamilyPlan, type FamilyRepair, type IpsetNames } from './plan.ts';
import { detectVariant, tool, type Variant } from './variant.ts';

const tables = ['nat', 'filter', 'mangle'] as const;

function familyOptions(opts: ModeOptions, family: Family): FamilyOptions {
  return {
    family,
    clusterCIDR: ofFamily(opts.clusterCIDRs, family)[0] ?? '',
    masqueradeAll: opts.masqueradeAll,
    nodePortCIDRs: ofFamily(opts.nodePortAddresses, family),
    mark: `0x${(1 << opts.masqueradeBit).toString(16)}`,
  };
}

function ipsetNames(family: Family): IpsetNames {
  return { set: loopbackSet(family), family: family === 4 ? 'inet' : 'inet6' };
}

/** One sync's batches, per family, and the record change they bring. */
export interface IptablesPlan extends Plan {
  readonly families: readonly FamilyPlan[];
  /** ipset restore lines (all families). */
  readonly ipset: readonly string[];
  /** The iptables-restore batch of each family, in `families` order ('' when nothing to send). */
  readonly restores: readonly string[];
  /** The damage this plan repairs, settled once it is applied. */
  readonly repairing: RepairSnapshot<IptDamage>;
}

type Records = Map<Family, FamilyRecord>;

export class IptablesBackend implements Backend<IptablesPlan> {
  readonly mode = 'iptables' as const;
  private readonly log: Logger;
  private readonly exec: Exec;
  private readonly families: readonly Family[];
  private readonly famOpts = new Map<Family, FamilyOptions>();
  private readonly settings: Readonly<Record<string, unknown>>;
  /** Per family, what the kernel holds as far as kproxy knows. */
  private readonly applied = new AppliedRecord<Records>();
  private variant: Variant | undefined;
  private setsReady = false;
  /** Service chains found in the kernel at start-up (adopted, then deleted if stale). */
  private existing: Map<Family, Set<string>> | undefined;
  /** Jumps from built-in chains missing before a full sync, or found missing by a repair (read by prepare()). */
  private missing = new Map<Family, BuiltinJump[]>();
  /** What someone else changed, waiting for the next plan. */
  private readonly pending = new PendingRepairs<IptDamage>();
  /** What prepare() read the kernel for: the next plan repairs exactly this. */
  private prepared: RepairSnapshot<IptDamage> | undefined;
  /** Applies accepted so far, and whether one is running: a drift check that overlapped one is stale. */
  private applies = 0;
  private applying = false;
  /** Chains whose kernel text never matched kproxy's rendering after a rewrite: not compared any more. */
  private readonly unverifiable = new Set<string>();
  private readonly mismatches = new Map<string, number>();
  private monitor: NftMonitor | undefined;

  constructor(opts: ModeOptions, log: Logger) {
    this.log = log.child({ component: 'iptables' });
    this.exec = opts.exec ?? hostExec;
    this.settings = opts.settings ?? {};
    this.families = [...opts.families].sort();
    for (const f of this.families) this.famOpts.set(f, familyOptions(opts, f));
    const multi = (f: Family) => ofFamily(opts.clusterCIDRs, f).length > 1;
    for (const f of this.families) {
      if (multi(f)) this.log.warn({ family: f }, 'several cluster CIDRs of one family: only the first is used for masquerade decisions');
    }
  }

  private async getVariant(): Promise<Variant> {
    this.variant ??= await detectVariant(this.exec);
    return this.variant;
  }

  /** Names of kproxy's per-Service chains the kernel holds now (read once, at start-up). */
  private async listServiceChains(family: Family, variant: Variant): Promise<Set<string>> {
    const found = new Set<string>();
    const keep = (name: string): void => {
      if (serviceChainPrefixes.some((p) => name.startsWith(p))) found.add(`nat ${name}`);
    };
    if (variant === 'nft') {
      // `nft list chains` reads only chain names: milliseconds even for a huge table.
      try {
        const { stdout } = await this.exec('nft', ['list', 'chains', family === 4 ? 'ip' : 'ip6']);
        let inNat = false;
        for (const line of stdout.split('\n')) {
          const t = line.match(/^\s*table \S+ (\S+) \{/);
          if (t) inNat = t[1] === 'nat';
          const c = line.match(/^\s*chain (\S+) \{/);
          if (c && inNat) keep(c[1]);
        }
        return found;
      } catch {
        // nft not installed: fall back to the save tool
      }
    }
    const { stdout } = await this.exec(tool(family, variant, '-save'), ['-t', 'nat']);
    for (const t of parseSave(stdout)) for (const c of t.chains) keep(c);
    return found;
  }

  /**
   * The jumps from built-in chains that are missing, so the full batch can
   * insert them (no separate process per jump). Only the small built-in
   * chains are listed, never the whole table.
   */
  private async missingJumps(family: Family, variant: Variant, only?: readonly { table: Table; chain: string }[]): Promise<BuiltinJump[]> {
    const present = new Set<string>();
    const wanted = (j: BuiltinJump): boolean => !only || only.some((o) => o.table === j.table && o.chain === j.from);
    const jumps = builtinJumps().filter(wanted);
    if (variant === 'legacy') {
      // Legacy reads a whole table per call anyway: one save per table.
      await Promise.all([...new Set(jumps.map((j) => j.table))].map(async (table) => {
        const { stdout } = await this.exec(tool(family, variant, '-save'), ['-t', table]);
        for (const t of parseSave(stdout)) for (const r of t.rules) present.add(`${t.name} ${r}`);
      }));
    } else {
      // nft fetches just the chain asked for.
      const pairs = [...new Set(jumps.map((j) => `${j.table} ${j.from}`))];
      await Promise.all(pairs.map(async (pair) => {
        const [table, chain] = pair.split(' ');
        const { stdout } = await this.exec(tool(family, variant, ''), ['-w', '-t', table, '-S', chain]);
        for (const line of stdout.split('\n')) if (line.startsWith(`-A ${chain} `)) present.add(`${table} ${line}`);
      }));
    }
    return jumps.filter((j) => !present.has(`${j.table} -A ${j.from} ${j.rule}`));
  }

  /** One service port's rules and ipset entries (see describe.ts). */
  describeService(state: NodeState, key: string): string[] {
    return describeServicePort(state, key, this.famOpts);
  }

  render(state: NodeState): string {
    const parts: string[] = [];
    const ipset: string[] = [];
    for (const f of this.families) {
      const plan = planFull(state, this.famOpts.get(f)!, new FamilyRecord(), new Set(), ipsetNames(f), builtinJumps());
      parts.push(`# ${f === 4 ? 'iptables' : 'ip6tables'}-restore --noflush -w\n${plan.batch.toString()}`);
      for (const l of plan.ipset) ipset.push(l);
    }
    return `# ipset restore -exist\n${ipset.join('\n')}\n${parts.join('')}`;
  }

  /**
   * A full sync needs the variant, what a previous kproxy left (once) and
   * the missing built-in jumps; a repair of jumps needs the missing ones of
   * the built-in chains someone changed.
   */
  async prepare(changes: Changes): Promise<void> {
    const variant = await this.getVariant();
    const snap = this.pending.snapshot();
    this.prepared = snap;
    this.missing = new Map();
    if (!this.applied.needsFull(changes.full) && snap.full === undefined) {
      for (const f of this.families) {
        const from = snap.items.filter((d) => d.kind === 'jump' && d.family === f);
        if (from.length) this.missing.set(f, await this.missingJumps(f, variant, from));
      }
      return;
    }
    if (!this.existing) {
      const existing = new Map<Family, Set<string>>();
      for (const f of this.families) existing.set(f, await this.listServiceChains(f, variant));
      this.existing = existing;
    }
    for (const f of this.families) this.missing.set(f, await this.missingJumps(f, variant));
  }

  plan(state: NodeState, changes: Changes): IptablesPlan {
    const repairing = this.prepared ?? { items: [] };
    this.prepared = undefined;
    const full = this.applied.needsFull(changes.full) || repairing.full !== undefined;
    const current = this.applied.current;
    const families: FamilyPlan[] = this.families.map((f) => {
      const o = this.famOpts.get(f)!;
      return full
        ? planFull(state, o, current?.get(f) ?? new FamilyRecord(), this.existing?.get(f) ?? new Set(), ipsetNames(f), this.missing.get(f) ?? [])
        : planPartial(state, changes.services, o, current!.get(f)!, ipsetNames(f), this.repairOf(f, repairing));
    });
    const ipset = families.flatMap((p) => p.ipset);
    const restores = families.map((p) => p.batch.toString());
    return {
      full, families, ipset, restores, repairing, repairs: PendingRepairs.repairsOf(repairing, full),
      size: ipset.length + families.reduce((n, p) => n + p.batch.lines, 0),
      refused: families.flatMap((p) => p.refused),
    };
  }

  private repairOf(f: Family, snap: RepairSnapshot<IptDamage>): FamilyRepair {
    const chainKeys = new Set<string>();
    for (const d of snap.items) if (d.family === f && d.kind === 'chain') chainKeys.add(`${d.table} ${d.chain}`);
    return { chains: chainKeys, jumps: this.missing.get(f) ?? [] };
  }

  async apply(plan: IptablesPlan): Promise<void> {
    const variant = await this.getVariant();
    const change = {
      commit: (): Records => {
        const records: Records = new Map();
        for (const p of plan.families) records.set(p.family, p.commit());
        return records;
      },
    };
    this.applying = true;
    try {
      await this.applied.apply(change, async () => {
        if (!this.setsReady) {
          // The POSTROUTING hairpin rule names the set: create it (a tiny
          // batch) before the restore; filling it can then run alongside.
          const creates = plan.families.flatMap((p) => p.ipsetCreate);
          if (creates.length) await this.exec('ipset', ['restore', '-exist'], `${creates.join('\n')}\n`);
          this.setsReady = true;
        }
        const runIpset = async (): Promise<void> => {
          if (plan.ipset.length) await this.exec('ipset', ['restore', '-exist'], `${plan.ipset.join('\n')}\n`);
        };
        // Families are independent tables: restore them side by side.
        const runRestores = Promise.all(plan.families.map(async (p, i) => {
          if (plan.restores[i]) await this.exec(tool(p.family, variant, '-restore'), ['--noflush', '-w'], plan.restores[i], { commits: variant === 'nft' ? p.batch.tables : 0 });
        }));
        await Promise.all([runIpset(), runRestores]);
      });
    } catch (e) {
      this.setsReady = false;
      this.existing = undefined; // re-read what the kernel holds before the next (full) sync
      this.log.error({ err: e, full: plan.full }, 'iptables sync failed; the next sync will be full');
      throw e;
    } finally {
      this.applying = false;
    }
    this.applies++;
    this.pending.settle(plan.repairing, plan.full);
    if (plan.full) this.existing = new Map(); // adopted: the record now knows every chain
  }

  owned(): Record<string, number> {
    return this.ruleCounts();
  }

  private ruleCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [f, rec] of this.applied.current ?? []) {
      for (const [t, n] of Object.entries(rec.ruleCounts)) out[f === 4 ? t : `${t}6`] = n;
    }
    return out;
  }

  async readKernel(): Promise<string> {
    const variant = await this.getVariant();
    const out: string[] = [];
    for (const f of this.families) {
      const dumps: string[] = [];
      for (const t of tables) dumps.push((await this.exec(tool(f, variant, '-save'), ['-t', t])).stdout);
      out.push(`# ${f === 4 ? 'iptables' : 'ip6tables'}-save (kproxy's chains)\n${ownedView(dumps.join('\n'))}`);
    }
    return out.join('');
  }

  /**
   * The periodic check. iptables-legacy: one save per table, every owned
   * chain compared with the record. iptables-nft: the canary of each table
   * and the jumps from built-in chains, each chain listed alone (nf_tables
   * events report the rest as it happens).
   */
  async checkDrift(): Promise<DriftReport> {
    const variant = await this.getVariant();
    const record = this.applied.current;
    if (!record) return { damage: [] }; // the next sync is full anyway
    const appliesBefore = this.applies;
    const findings: Finding<IptDamage>[] = [];
    let full: string | undefined;
    for (const f of this.families) {
      const rec = record.get(f);
      if (!rec) continue;
      if (variant === 'legacy') {
        findings.push(...await this.compareLegacy(f, rec));
      } else {
        const r = await this.checkCanariesAndJumps(f, variant);
        findings.push(...r.findings);
        full ??= r.full;
      }
    }
    // A sync during the read may have changed what was read or what the record says.
    if (this.applying || this.applies !== appliesBefore) return { damage: [] };
    if (variant === 'legacy') this.noteMismatches(findings);
    return this.queue(findings, full);
  }

  private async compareLegacy(f: Family, rec: FamilyRecord): Promise<Finding<IptDamage>[]> {
    const saved = new Map<Table, SavedTable>();
    await Promise.all((['nat', 'filter', 'mangle'] as const).map(async (t) => {
      saved.set(t, digestSave((await this.exec(tool(f, 'legacy', '-save'), ['-t', t])).stdout, t));
    }));
    return compareSaved(f, saved, expectedDigests(rec, this.famOpts.get(f)!), this.unverifiable);
  }

  /**
   * A chain found different right after kproxy rewrote it (three checks
   * running) differs only in how the kernel prints it: it is left out of
   * the comparison from then on, rather than rewritten every period.
   */
  private noteMismatches(findings: readonly Finding<IptDamage>[]): void {
    const now = new Set(findings.filter((x) => x.damage.kind === 'chain').map((x) => x.key));
    for (const k of this.mismatches.keys()) if (!now.has(k)) this.mismatches.delete(k);
    for (const x of findings) {
      if (x.damage.kind !== 'chain') continue;
      const n = (this.mismatches.get(x.key) ?? 0) + 1;
      this.mismatches.set(x.key, n);
      if (n >= 3) {
        this.unverifiable.add(`${x.damage.table} ${x.damage.chain}`);
        this.log.warn({ chain: x.damage.object }, 'the kernel\'s text of this chain never matches what kproxy wrote, even right after a rewrite; no longer comparing it');
      }
    }
  }

  private async checkCanariesAndJumps(f: Family, variant: Variant): Promise<{ findings: Finding<IptDamage>[]; full?: string }> {
    const cmd = tool(f, variant, '');
    const findings: Finding<IptDamage>[] = [];
    let full: string | undefined;
    await Promise.all([
      ...(['mangle', 'nat', 'filter'] as const).map(async (t) => {
        let listing = '';
        try {
          listing = (await this.exec(cmd, ['-w', '-t', t, '-S', chains.canary])).stdout;
        } catch (e) {
          if (!(e instanceof ToolError)) throw e;
        }
        if (intactCanary(listing)) return;
        const found = chainFinding(f, t, chains.canary);
        // Already known from nf_tables events: that repair is on its way.
        if (this.monitor?.watching && this.pending.has(found.key)) return;
        full ??= `the canary chain of the ${f === 4 ? 'ip' : 'ip6'} ${t} table was flushed or deleted`;
      }),
      ...builtinChainsWithJumps().map(async ({ table, chain }) => {
        const listing = (await this.exec(cmd, ['-w', '-t', table, '-S', chain])).stdout;
        if (missingJumpsInListing(table, chain, listing).length) findings.push(jumpFinding(f, table, chain));
      }),
    ]);
    return full === undefined ? { findings } : { findings, full };
  }

  /** Queues findings for the next plan; reports the new ones. */
  private queue(findings: Iterable<Finding<IptDamage>>, full?: string): DriftReport {
    const damage = this.pending.add(findings);
    if (full !== undefined) this.pending.requireFull(full);
    const owed = this.pending.full;
    return owed !== undefined && (full !== undefined || damage.length) ? { damage, full: owed } : { damage };
  }

  /**
   * On iptables-nft, watches nf_tables events: a foreign transaction that
   * touched kproxy's chains is repaired at once. iptables-legacy makes no
   * such events; its periodic check does the work.
   */
  watchDrift(onDrift: (report: DriftReport) => void): DriftWatch {
    let stopped = false;
    const ready = (async () => {
      const variant = await this.getVariant().catch(() => undefined);
      if (variant !== 'nft' || stopped) return;
      if (this.settings.watchEvents === false) {
        this.log.info('not watching nf_tables events (--iptables-watch-events=false): others\' changes wait for the periodic check');
        return;
      }
      const families = this.families;
      const monitor = new NftMonitor({
        exec: this.exec,
        log: this.log.child({ watch: 'nf_tables events' }),
        watches: (family, table) => (family === 'ip' || family === 'ip6') && (table === 'nat' || table === 'filter' || table === 'mangle'),
        listener: driftListener<Finding<IptDamage>>({
          fromEvents: (gen) => {
            const r = damageFromEvents(gen, families);
            return { findings: r.findings, broad: r.full };
          },
          queue: (findings, full) => this.queue(findings, full),
          report: onDrift,
          applied: () => this.applies > 0,
          probe: () => void this.probe(),
          log: this.log,
        }),
      });
      this.monitor = monitor;
      monitor.start();
      await monitor.ready;
    })();
    return {
      ready,
      stop: async () => {
        stopped = true;
        await ready.catch(() => undefined);
        await this.monitor?.stop();
      },
    };
  }

  /** A transaction that changes nothing (the mangle canary written again), so the watch sees a generation of kproxy's own. */
  private async probe(): Promise<void> {
    const f = this.families[0];
    await this.exec(tool(f, 'nft', '-restore'), ['--noflush', '-w'], `*mangle\n:${chains.canary} - [0:0]\n-A ${chains.canary} ${canaryRule}\nCOMMIT\n`, { commits: 1 }).catch(() => undefined);
  }

  async cleanup(): Promise<void> {
    const variant = await this.getVariant();
    for (const f of this.families) {
      const lines: string[] = [];
      for (const t of tables) {
        let text: string;
        try {
          text = (await this.exec(tool(f, variant, '-save'), ['-t', t])).stdout;
        } catch {
          continue; // table not present in this variant
        }
        for (const st of parseSave(text)) {
          const owned = st.chains.filter((c) => isOwnedChain(st.name, c));
          const jumps = st.rules.filter((r) => isOwnedJump(st.name, r));
          if (!owned.length && !jumps.length) continue;
          // Tables of a previous kube-proxy can hold 100k chains: no argument spreading.
          lines.push(`*${st.name}`);
          for (const c of owned) lines.push(`:${c} - [0:0]`);
          for (const r of jumps) lines.push(r.replace(/^-A /, '-D '));
          for (const c of owned) lines.push(`-X ${c}`);
          lines.push('COMMIT');
        }
      }
      if (lines.length) await this.exec(tool(f, variant, '-restore'), ['--noflush', '-w'], `${lines.join('\n')}\n`, { commits: variant === 'nft' ? lines.filter((l) => l === 'COMMIT').length : 0 });
      // The scratch set only outlives a sync that failed half-way.
      for (const set of [loopbackSet(f), scratchSet(loopbackSet(f))]) {
        try {
          await this.exec('ipset', ['destroy', set]);
        } catch (e) {
          if (!(e instanceof ToolError) || !/does not exist/.test(e.stderr)) throw e;
        }
      }
    }
    this.forget();
  }

  /** The kernel no longer holds what the record says: re-read and rewrite everything next time. */
  private forget(): void {
    this.applied.forget();
    this.pending.clear();
    this.setsReady = false;
    this.existing = undefined;
  }
}
