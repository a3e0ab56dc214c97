// kproxy's own record of what one of its tables holds, and the commands that
// move the kernel from that record to a new NodeState: everything on a full
// sync, only the changed elements and chains on an incremental one. The
// kernel is never listed back to compute a change.
import type { NodeState, ServicePortState } from '../../proxy/model.ts';
import type { ModeOptions } from '../backend.ts';
import type { Command } from './objects.ts';
import { spreadChain, staticChains, staticSets, tableName, type ChainDef, type FamilySyntax, type SetDef } from './layout.ts';
import { contribution, type Contribution, type ElementRef } from './service-rules.ts';

type Owners = Map<string, string | undefined>;

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}

function sameSpec(a: SetDef, b: SetDef): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class TableRecord {
  readonly f: FamilySyntax;
  private readonly opts: ModeOptions;
  private readonly contribs = new Map<string, Contribution>();
  /** set → key → owner (service key) → value. The smallest owner wins a contested key. */
  private readonly owners = new Map<string, Map<string, Owners>>();
  private readonly sharedUsers = new Map<string, Set<string>>();
  private ownedRules = 0;

  constructor(f: FamilySyntax, opts: ModeOptions) {
    this.f = f;
    this.opts = opts;
  }

  static of(state: NodeState, f: FamilySyntax, opts: ModeOptions): TableRecord {
    const r = new TableRecord(f, opts);
    for (const s of state.services.values()) {
      if (s.family === f.family) r.put(s.key, contribution(s, f, opts));
    }
    return r;
  }

  /** Rules plus elements kproxy holds in this table. */
  count(): number {
    let n = this.ownedRules;
    for (const c of staticChains(this.f, this.opts)) n += c.rules.length;
    for (const name of this.sharedUsers.keys()) n += spreadChain(this.f, this.opts, name).rules.length;
    for (const keys of this.owners.values()) n += keys.size;
    return n;
  }

  private where() {
    return { family: this.f.nft, table: tableName } as const;
  }

  private effective(set: string, key: string): { value: string | undefined } | undefined {
    const o = this.owners.get(set)?.get(key);
    if (!o || o.size === 0) return undefined;
    let best: string | undefined;
    for (const owner of o.keys()) if (best === undefined || owner < best) best = owner;
    return { value: o.get(best!) };
  }

  private put(owner: string, c: Contribution): void {
    this.contribs.set(owner, c);
    for (const e of c.elements) {
      let keys = this.owners.get(e.set);
      if (!keys) this.owners.set(e.set, (keys = new Map()));
      let o = keys.get(e.key);
      if (!o) keys.set(e.key, (o = new Map()));
      o.set(owner, e.value);
    }
    for (const name of c.shared) {
      let u = this.sharedUsers.get(name);
      if (!u) this.sharedUsers.set(name, (u = new Set()));
      u.add(owner);
    }
    for (const ch of c.chains) this.ownedRules += ch.rules.length;
  }

  private drop(owner: string): void {
    const c = this.contribs.get(owner);
    if (!c) return;
    this.contribs.delete(owner);
    for (const e of c.elements) {
      const keys = this.owners.get(e.set);
      const o = keys?.get(e.key);
      o?.delete(owner);
      if (o && o.size === 0) keys!.delete(e.key);
    }
    for (const name of c.shared) {
      const u = this.sharedUsers.get(name);
      u?.delete(owner);
      if (u && u.size === 0) this.sharedUsers.delete(name);
    }
    for (const ch of c.chains) this.ownedRules -= ch.rules.length;
  }

  private allChains(): ChainDef[] {
    const shared = [...this.sharedUsers.keys()].sort(bySpread).map((n) => spreadChain(this.f, this.opts, n));
    const owned = [...this.contribs.keys()].sort().flatMap((k) => this.contribs.get(k)!.chains);
    return [...shared, ...owned, ...staticChains(this.f, this.opts)];
  }

  private allSets(): SetDef[] {
    return [...staticSets(this.f), ...[...this.contribs.keys()].sort().flatMap((k) => this.contribs.get(k)!.sets)];
  }

  /** Elements grouped by service port (sorted), so a dump reads Service by Service. */
  private allElements(): ElementRef[] {
    const out: ElementRef[] = [];
    const seen = new Set<string>();
    for (const owner of [...this.contribs.keys()].sort()) {
      for (const e of this.contribs.get(owner)!.elements) {
        const id = `${e.set}\u0000${e.key}`;
        if (seen.has(id)) continue;
        seen.add(id);
        // Owners are visited smallest first, so this one holds the key.
        out.push(e.value === undefined ? { set: e.set, key: e.key } : { set: e.set, key: e.key, value: e.value });
      }
    }
    return out;
  }

  /**
   * The commands of a full sync. Without `previous` (start-up, or after a
   * failure left the kernel unknown) the table is deleted and rebuilt in the
   * same transaction; with it, rules are flushed and re-added, maps refilled,
   * dynamic affinity sets kept, and objects the previous record had but this
   * one lacks are deleted.
   */
  fullCommands(previous: TableRecord | undefined): Command[] {
    const w = this.where();
    const cmds: Command[] = [{ verb: 'add', object: 'table', ...w }];
    if (previous) {
      cmds.push({ verb: 'flush', object: 'table', ...w });
    } else {
      cmds.push({ verb: 'delete', object: 'table', ...w }, { verb: 'add', object: 'table', ...w });
    }
    const sets = this.allSets();
    for (const s of sets) {
      cmds.push({ verb: 'add', object: s.kind, ...w, name: s.name, spec: s.spec });
      if (previous && !s.spec.flags?.includes('dynamic')) cmds.push({ verb: 'flush', object: s.kind, ...w, name: s.name });
    }
    const chainDefs = this.allChains();
    for (const c of chainDefs) cmds.push(c.base ? { verb: 'add', object: 'chain', ...w, name: c.name, base: c.base } : { verb: 'add', object: 'chain', ...w, name: c.name });
    for (const c of chainDefs) for (const rule of c.rules) cmds.push({ verb: 'add', object: 'rule', ...w, chain: c.name, rule });
    for (const e of this.allElements()) cmds.push(addElement(w, e));
    if (previous) {
      const want = new Set(chainDefs.map((c) => c.name));
      for (const c of previous.allChains()) if (!want.has(c.name)) cmds.push({ verb: 'delete', object: 'chain', ...w, name: c.name });
      const wantSets = new Set(sets.map((s) => s.name));
      for (const s of previous.allSets()) if (!wantSets.has(s.name)) cmds.push({ verb: 'delete', object: s.kind, ...w, name: s.name });
    }
    return cmds;
  }

  /**
   * Updates the record for the service ports `keys` (present in `state`, or
   * removed) and returns the commands that bring the kernel along.
   */
  update(state: NodeState, keys: Iterable<string>): Command[] {
    const w = this.where();
    const elemBefore = new Map<string, { set: string; key: string; before: { value: string | undefined } | undefined }>();
    const sharedBefore = new Map<string, boolean>();
    const flushChains: string[] = [];
    const delChains: string[] = [];
    const delSets: SetDef[] = [];
    const addChains: ChainDef[] = [];
    const ruleChains: ChainDef[] = [];
    const addSets: SetDef[] = [];

    for (const key of keys) {
      const s: ServicePortState | undefined = state.services.get(key);
      const next = s && s.family === this.f.family ? contribution(s, this.f, this.opts) : undefined;
      const prev = this.contribs.get(key);
      if (!prev && !next) continue;
      for (const e of [...(prev?.elements ?? []), ...(next?.elements ?? [])]) {
        const id = `${e.set}\u0000${e.key}`;
        if (!elemBefore.has(id)) elemBefore.set(id, { set: e.set, key: e.key, before: this.effective(e.set, e.key) });
      }
      for (const name of [...(prev?.shared ?? []), ...(next?.shared ?? [])]) {
        if (!sharedBefore.has(name)) sharedBefore.set(name, this.sharedUsers.has(name));
      }
      const prevSets = new Map((prev?.sets ?? []).map((x) => [x.name, x]));
      const nextSets = new Map((next?.sets ?? []).map((x) => [x.name, x]));
      let setsRespecified = false;
      for (const [name, def] of prevSets) {
        const n = nextSets.get(name);
        if (!n || !sameSpec(def, n)) delSets.push(def);
        if (n && !sameSpec(def, n)) setsRespecified = true;
      }
      for (const [name, def] of nextSets) {
        const p = prevSets.get(name);
        if (!p || !sameSpec(def, p)) addSets.push(def);
      }
      const prevChains = new Map((prev?.chains ?? []).map((c) => [c.name, c]));
      const nextChains = new Map((next?.chains ?? []).map((c) => [c.name, c]));
      for (const [name, c] of prevChains) {
        const n = nextChains.get(name);
        if (!n) {
          flushChains.push(name);
          delChains.push(name);
        } else if (setsRespecified || !sameRules(c.rules, n.rules)) {
          flushChains.push(name);
          ruleChains.push(n);
        }
      }
      for (const [name, c] of nextChains) {
        if (!prevChains.has(name)) {
          addChains.push(c);
          ruleChains.push(c);
        }
      }
      this.drop(key);
      if (next) this.put(key, next);
    }

    for (const [name, was] of sharedBefore) {
      const is = this.sharedUsers.has(name);
      if (was && !is) {
        flushChains.push(name);
        delChains.push(name);
      } else if (!was && is) {
        const c = spreadChain(this.f, this.opts, name);
        addChains.push(c);
        ruleChains.push(c);
      }
    }

    const delElems: ElementRef[] = [];
    const addElems: ElementRef[] = [];
    for (const { set, key, before } of elemBefore.values()) {
      const after = this.effective(set, key);
      if (before && after && before.value === after.value) continue;
      if (before) delElems.push({ set, key });
      if (after) addElems.push({ set, key, value: after.value });
    }

    // Removals first, then additions: each step only references objects
    // that exist at that point of the (atomic) transaction.
    const cmds: Command[] = [];
    for (const name of flushChains) cmds.push({ verb: 'flush', object: 'chain', ...w, name });
    for (const e of delElems) cmds.push({ verb: 'delete', object: 'element', ...w, set: e.set, elements: [{ key: e.key }] });
    for (const name of delChains) cmds.push({ verb: 'delete', object: 'chain', ...w, name });
    for (const s of delSets) cmds.push({ verb: 'delete', object: s.kind, ...w, name: s.name });
    for (const c of addChains) cmds.push({ verb: 'add', object: 'chain', ...w, name: c.name });
    for (const s of addSets) cmds.push({ verb: 'add', object: s.kind, ...w, name: s.name, spec: s.spec });
    for (const c of ruleChains) for (const rule of c.rules) cmds.push({ verb: 'add', object: 'rule', ...w, chain: c.name, rule });
    for (const e of addElems) cmds.push(addElement(w, e));
    return cmds;
  }
}

function addElement(w: { family: FamilySyntax['nft']; table: string }, e: ElementRef): Command {
  return { verb: 'add', object: 'element', ...w, set: e.set, elements: [e.value === undefined ? { key: e.key } : { key: e.key, value: e.value }] };
}

/** cluster-2 before cluster-10. */
function bySpread(a: string, b: string): number {
  return naturalCompare(a, b);
}

const collator = new Intl.Collator('en', { numeric: true });
function naturalCompare(a: string, b: string): number {
  return collator.compare(a, b);
}
