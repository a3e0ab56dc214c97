// --proxy-mode=nftables: one `table ip kproxy` (and `table ip6 kproxy`),
// changed by one `nft -f -` transaction per sync. Incremental syncs send
// only what changed, computed from kproxy's own record of what it applied.
import type { Changes, Family, NodeState } from '../../proxy/model.ts';
import type { Logger } from '../../lib/log.ts';
import type { Backend, ModeOptions, SyncResult } from '../backend.ts';
import { hostExec, type Exec } from '../../lib/exec.ts';
import { describeServicePort } from './describe.ts';
import { familySyntax, staticChains, tableName, type FamilySyntax } from './layout.ts';
import { chainsInListing } from './listing.ts';
import { Transaction, type Command } from './objects.ts';
import { TableRecord } from './table-record.ts';

export const nftTool = '/usr/sbin/nft';

export class NftablesBackend implements Backend {
  readonly mode = 'nftables' as const;
  private readonly opts: ModeOptions;
  private readonly log: Logger;
  private readonly exec: Exec;
  private readonly families: readonly FamilySyntax[];
  /** What the kernel holds, per family; undefined when unknown (start-up, after a failure). */
  private records: Map<Family, TableRecord> | undefined;

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

  async sync(state: NodeState, changes: Changes): Promise<SyncResult> {
    const started = performance.now();
    const full = changes.full || this.records === undefined;
    const tx = new Transaction();
    let next: Map<Family, TableRecord>;
    try {
      if (full) {
        next = new Map();
        for (const f of this.families) {
          const { record, commands } = TableRecord.full(state, f, this.opts, this.records?.get(f.family));
          addAll(tx, commands);
          next.set(f.family, record);
        }
      } else {
        next = this.records!;
        // The record changes in place; a failure below forgets it.
        for (const r of next.values()) addAll(tx, r.update(state, changes.services));
      }
      if (tx.error) throw tx.error;
    } catch (error) {
      this.records = undefined;
      return this.result(false, full, started, performance.now(), 0, error as Error);
    }
    const rendered = performance.now();
    const batch = tx.toString();
    if (this.log.isLevelEnabled('debug')) this.log.debug({ batch, full }, 'nft transaction');
    if (batch !== '') {
      try {
        await this.exec(nftTool, ['-f', '-'], batch);
      } catch (error) {
        this.records = undefined;
        this.log.error({ err: error, full, lines: tx.size }, 'nft transaction failed');
        return this.result(false, full, started, rendered, tx.size, error as Error);
      }
    }
    this.records = next;
    return this.result(true, full, started, rendered, tx.size);
  }

  private result(ok: boolean, full: boolean, started: number, rendered: number, lines: number, error?: Error): SyncResult {
    const now = performance.now();
    const ruleCounts: Record<string, number> = {};
    for (const [, r] of this.records ?? []) ruleCounts[`${r.f.nft} ${tableName}`] = r.count();
    return {
      ok, full, renderMs: rendered - started, applyMs: now - rendered, batchLines: lines, ruleCounts,
      ...(error ? { error } : {}),
    };
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
    if (!this.records) return true;
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
    this.records = undefined;
  }
}

function addAll(tx: Transaction, cmds: readonly Command[]): void {
  for (const c of cmds) tx.add(c);
}
