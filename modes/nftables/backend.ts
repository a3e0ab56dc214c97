// --proxy-mode=nftables: one `table ip kproxy` (and `table ip6 kproxy`),
// changed by one `nft -f -` transaction per sync. Incremental syncs send
// only what changed, computed from kproxy's own record of what it applied.
// Changes someone else makes to the table are seen as they happen (nf_tables
// events) and put back from the record by the next sync (drift.ts).
import type { Changes, Family, NodeState } from '../../proxy/model.ts';
import type { Logger } from '../../lib/log.ts';
import type { Backend, DriftReport, DriftWatch, ModeOptions, Plan } from '../backend.ts';
import { driftListener, NftMonitor } from '../nft-monitor.ts';
import { AppliedRecord } from '../record.ts';
import type { RefusedPort } from '../values.ts';
import { PendingRepairs, type Finding, type RepairSnapshot } from '../repairs.ts';
import { hostExec, type Exec } from '../../lib/exec.ts';
import { describeServicePort } from './describe.ts';
import { damageFromEvents, deletesRules, redeclareSets, repairCommands, type NftDamage } from './drift.ts';
import { familySyntax, tableName, type FamilySyntax } from './layout.ts';
import { chainsInListing } from './listing.ts';
import { Transaction, type Command } from './objects.ts';
import { TableRecord } from './table-record.ts';

export const nftTool = '/usr/sbin/nft';

/** One sync's nft transaction and the records it leaves. */
export interface NftablesPlan extends Plan {
  readonly batch: string;
  /** Per family, the record once the kernel accepted the batch. */
  readonly next: ReadonlyMap<Family, TableRecord>;
  /** The damage this plan repairs, settled once it is applied. */
  readonly repairing: RepairSnapshot<NftDamage>;
  /** Whether it rebuilds the tables from nothing (their structure was changed by someone else). */
  readonly rebuild: boolean;
}

type Records = Map<Family, TableRecord>;

export class NftablesBackend implements Backend<NftablesPlan> {
  readonly mode = 'nftables' as const;
  private readonly opts: ModeOptions;
  private readonly log: Logger;
  private readonly exec: Exec;
  private readonly families: readonly FamilySyntax[];
  /** What the kernel holds, per family, as far as kproxy knows. */
  private readonly applied = new AppliedRecord<Records>();
  /** What someone else changed, waiting for the next plan. */
  private readonly pending = new PendingRepairs<NftDamage>();
  /** Someone changed the table's structure: the next full sync rebuilds it from nothing. */
  private rebuildWanted = false;
  private applies = 0;
  private applying = false;
  private monitor: NftMonitor | undefined;

  constructor(opts: ModeOptions, log: Logger) {
    this.opts = opts;
    this.log = log;
    this.exec = opts.exec ?? hostExec;
    this.families = [...new Set(opts.families)].sort().map(familySyntax);
  }

  /** The transaction of a full sync from an unknown kernel (what `dump` shows). */
  render(state: NodeState): string {
    const tx = new Transaction();
    for (const f of this.families) addAll(tx, TableRecord.full(state, f, this.opts, undefined).commands);
    if (tx.error) throw tx.error;
    return tx.toString();
  }

  /** One service port's objects, one command per line (see describe.ts). */
  describeService(state: NodeState, key: string): string[] {
    return describeServicePort(state, key, this.families, this.opts);
  }

  plan(state: NodeState, changes: Changes): NftablesPlan {
    const repairing = this.pending.snapshot();
    // A repair in full rebuilds the table: a flush of every map would make
    // twice as many events as there are elements, more than nft monitor's
    // socket holds at 10,000 Services, and a loss of kproxy's own would hide others'.
    const rebuild = this.rebuildWanted || repairing.full !== undefined;
    const full = this.applied.needsFull(changes.full) || repairing.full !== undefined || rebuild;
    const current = rebuild ? undefined : this.applied.current;
    const tx = new Transaction();
    const next: Records = new Map();
    const refused: RefusedPort[] = [];
    for (const f of this.families) {
      if (full) {
        const { record, commands } = TableRecord.full(state, f, this.opts, current?.get(f.family), refused);
        addAll(tx, commands);
        next.set(f.family, record);
      } else {
        const base = current!.get(f.family)!;
        // Put back what others changed, from the record, before this sync's own changes.
        const cmds = repairCommands(base, repairing.items);
        const staged = base.stage();
        cmds.push(...staged.update(state, changes.services, refused));
        if (this.monitor?.source === 'nft monitor' && deletesRules(cmds)) cmds.push(...redeclareSets(f));
        addAll(tx, cmds);
        next.set(f.family, staged);
      }
    }
    if (tx.error) throw tx.error;
    return {
      full, batch: tx.toString(), next, size: tx.size, repairing, rebuild, repairs: PendingRepairs.repairsOf(repairing, full),
      ...(refused.length ? { refused } : {}),
    };
  }

  async apply(plan: NftablesPlan): Promise<void> {
    if (this.log.isLevelEnabled('debug')) this.log.debug({ batch: plan.batch, full: plan.full }, 'nft transaction');
    const change = {
      commit: (): Records => new Map([...plan.next].map(([f, r]) => [f, r.commit()])),
    };
    this.applying = true;
    try {
      await this.applied.apply(change, async () => {
        if (plan.batch === '') return;
        try {
          await this.exec(nftTool, ['-f', '-'], plan.batch);
        } catch (error) {
          this.log.error({ err: error, full: plan.full, lines: plan.size }, 'nft transaction failed');
          throw error;
        }
      });
    } finally {
      this.applying = false;
    }
    this.applies++;
    if (plan.rebuild) this.rebuildWanted = false;
    this.pending.settle(plan.repairing, plan.full);
  }

  owned(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [, r] of this.applied.current ?? []) out[`${r.f.nft} ${tableName}`] = r.count();
    return out;
  }

  async readKernel(): Promise<string> {
    const out: string[] = [];
    for (const f of this.families) {
      try {
        out.push((await this.exec(nftTool, ['list', 'table', f.nft, tableName])).stdout);
      } catch (e) {
        if (!/No such file or directory/.test(String((e as Error).message))) throw e;
      }
    }
    return out.join('');
  }

  /**
   * The periodic check: our table and every chain the record holds are
   * still there. Read with `nft list chains`, which does not fetch set and
   * map elements: listing even one chain of the table makes nft 1.0.6 fetch
   * every map element (seconds at 10,000 Services). Flushed rules and
   * deleted elements are seen by the nf_tables event watch (watchDrift).
   */
  async checkDrift(): Promise<DriftReport> {
    const record = this.applied.current;
    if (!record) return { damage: [] }; // the next sync is full anyway
    const appliesBefore = this.applies;
    let missing: string | undefined;
    for (const f of this.families) {
      let listing = '';
      try {
        listing = (await this.exec(nftTool, ['list', 'chains', f.nft])).stdout;
      } catch {
        // no table of this family at all
      }
      const have = chainsInListing(listing, f.nft, tableName);
      const rec = record.get(f.family);
      const gone = rec ? [...rec.chainRules().keys()].filter((c) => !have.has(c)) : [];
      if (have.size === 0) missing ??= `table ${f.nft} ${tableName} is gone`;
      else if (gone.length) missing ??= `chain${gone.length > 1 ? 's' : ''} ${gone.slice(0, 5).join(', ')} of table ${f.nft} ${tableName} gone`;
    }
    if (this.applying || this.applies !== appliesBefore || missing === undefined) return { damage: [] };
    return this.queue([], missing);
  }

  /** Queues findings for the next plan (`rebuild`: the table's structure changed); reports the new ones. */
  private queue(findings: Iterable<Finding<NftDamage>>, rebuild?: string): DriftReport {
    const damage = this.pending.add(findings);
    if (rebuild !== undefined) {
      this.rebuildWanted = true;
      this.pending.requireFull(rebuild);
    }
    const owed = this.pending.full;
    return owed !== undefined && (rebuild !== undefined || damage.length) ? { damage, full: owed } : { damage };
  }

  /**
   * Watches nf_tables events (modes/nft-monitor.ts): a foreign transaction
   * that touched kproxy's table is repaired by the next sync, chain by
   * chain, element by element, or set by set where the events did not
   * name the elements.
   */
  watchDrift(onDrift: (report: DriftReport) => void): DriftWatch {
    if (this.opts.settings?.watchEvents === false) {
      this.log.info('not watching nf_tables events (--nftables-watch-events=false): others\' changes wait for the periodic check');
      return { ready: Promise.resolve(), stop: async () => undefined };
    }
    const families = this.families;
    const monitor = new NftMonitor({
      exec: this.exec,
      log: this.log.child({ watch: 'nf_tables events' }),
      nft: nftTool,
      namedSets: true,
      watches: (family, table) => table === tableName && families.some((f) => f.nft === family),
      listener: driftListener<Finding<NftDamage>>({
        fromEvents: (gen) => {
          const r = damageFromEvents(gen, families);
          return { findings: r.findings, broad: r.rebuild };
        },
        queue: (findings, rebuild) => this.queue(findings, rebuild),
        report: onDrift,
        applied: () => this.applies > 0,
        probe: () => void this.probe(),
        log: this.log,
      }),
    });
    this.monitor = monitor;
    monitor.start();
    return { ready: monitor.ready, stop: () => monitor.stop() };
  }

  /** A transaction that changes nothing (a map declared again), so the watch sees a generation of kproxy's own. */
  private async probe(): Promise<void> {
    const f = this.families[0];
    const cmds = redeclareSets(f).slice(0, 1);
    const tx = new Transaction();
    addAll(tx, cmds);
    await this.exec(nftTool, ['-f', '-'], tx.toString()).catch(() => undefined);
  }

  async cleanup(): Promise<void> {
    // "add" then "delete" in one transaction: removes the table when it
    // exists and is a no-op otherwise; nothing outside it is touched.
    const lines = (['ip', 'ip6'] as const).flatMap((fam) => [`add table ${fam} ${tableName}`, `delete table ${fam} ${tableName}`]);
    await this.exec(nftTool, ['-f', '-'], lines.join('\n') + '\n');
    this.applied.forget();
    this.pending.clear();
  }
}

function addAll(tx: Transaction, cmds: readonly Command[]): void {
  for (const c of cmds) tx.add(c);
}
