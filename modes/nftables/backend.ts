// --proxy-mode=nftables: one `table ip kproxy` (and `table ip6 kproxy`),
// changed by one `nft -f -` transaction per sync. Incremental syncs send
// only what changed, computed from kproxy's own record of what it applied.
import type { Changes, Family, NodeState } from '../../proxy/model.ts';
import type { Logger } from '../../lib/log.ts';
import type { Backend, ModeOptions, Plan } from '../backend.ts';
import { AppliedRecord } from '../record.ts';
import type { RefusedPort } from '../values.ts';
import { hostExec, type Exec } from '../../lib/exec.ts';
import { describeServicePort } from './describe.ts';
import { familySyntax, staticChains, tableName, type FamilySyntax } from './layout.ts';
import { chainsInListing } from './listing.ts';
import { Transaction, type Command } from './objects.ts';
import { TableRecord } from './table-record.ts';

export const nftTool = '/usr/sbin/nft';

/** One sync's nft transaction and the records it leaves. */
export interface NftablesPlan extends Plan {
  readonly batch: string;
  /** Per family, the record once the kernel accepted the batch. */
  readonly next: ReadonlyMap<Family, TableRecord>;
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
    const full = this.applied.needsFull(changes.full);
    const current = this.applied.current;
    const tx = new Transaction();
    const next: Records = new Map();
    const refused: RefusedPort[] = [];
    for (const f of this.families) {
      if (full) {
        const { record, commands } = TableRecord.full(state, f, this.opts, current?.get(f.family), refused);
        addAll(tx, commands);
        next.set(f.family, record);
      } else {
        const staged = current!.get(f.family)!.stage();
        addAll(tx, staged.update(state, changes.services, refused));
        next.set(f.family, staged);
      }
    }
    if (tx.error) throw tx.error;
    return { full, batch: tx.toString(), next, size: tx.size, ...(refused.length ? { refused } : {}) };
  }

  async apply(plan: NftablesPlan): Promise<void> {
    if (this.log.isLevelEnabled('debug')) this.log.debug({ batch: plan.batch, full: plan.full }, 'nft transaction');
    const change = {
      commit: (): Records => new Map([...plan.next].map(([f, r]) => [f, r.commit()])),
    };
    await this.applied.apply(change, async () => {
      if (plan.batch === '') return;
      try {
        await this.exec(nftTool, ['-f', '-'], plan.batch);
      } catch (error) {
        this.log.error({ err: error, full: plan.full, lines: plan.size }, 'nft transaction failed');
        throw error;
      }
    });
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
   * Our table and its fixed chains are still there. Read with `nft list
   * chains`, which does not fetch set and map elements: listing even one
   * chain of the table makes nft 1.0.6 fetch every map element (seconds at
   * 10,000 Services). Rules flushed inside a chain that still exists are
   * repaired by the hourly full sync.
   */
  async drifted(): Promise<boolean> {
    if (!this.applied.current) return true;
    for (const f of this.families) {
      let listing: string;
      try {
        listing = (await this.exec(nftTool, ['list', 'chains', f.nft])).stdout;
      } catch {
        return true;
      }
      const have = chainsInListing(listing, f.nft, tableName);
      if (staticChains(f, this.opts).some((c) => !have.has(c.name))) return true;
    }
    return false;
  }

  async cleanup(): Promise<void> {
    // "add" then "delete" in one transaction: removes the table when it
    // exists and is a no-op otherwise; nothing outside it is touched.
    const lines = (['ip', 'ip6'] as const).flatMap((fam) => [`add table ${fam} ${tableName}`, `delete table ${fam} ${tableName}`]);
    await this.exec(nftTool, ['-f', '-'], lines.join('\n') + '\n');
    this.applied.forget();
  }
}

function addAll(tx: Transaction, cmds: readonly Command[]): void {
  for (const c of cmds) tx.add(c);
}
