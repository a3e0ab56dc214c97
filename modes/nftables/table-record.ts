// kproxy's own record of what one of its tables holds, and the commands that
// move the kernel from that record to a new NodeState: everything on a full
// sync, only the changed elements and chains on an incremental one. The
// kernel is never listed back to compute a change.
//
// The record keeps the applied ServicePortState per key plus, per element
// key, which service holds it (a string reference, no object per element);
// a service's elements and chains are recomputed from its state when it
// changes. That keeps a 10,000-Service record small and cheap to build.
//
// An incremental plan works on stage(): a copy-on-write view whose changes
// reach this record only through commit(), once the kernel accepted them.
import type { NodeState, ServicePortState } from '../../proxy/model.ts';
import type { ModeOptions } from '../backend.ts';
import { MapOverlay, type RecordMap } from '../record.ts';
import type { Command, Element } from './objects.ts';
import { spreadChain, staticChains, staticSets, tableName, type ChainDef, type FamilySyntax, type SetDef } from './layout.ts';
import { checkedContribution, isRefused, ownsObjects, type Contribution, type ElementRef } from './service-rules.ts';
import type { RefusedPort } from '../values.ts';

/** Elements per `add element` line of a full sync: nft parses big lists much faster than one line each. */
const elementsPerLine = 1000;

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}

function sameSpec(a: SetDef, b: SetDef): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const sep = '\u0000';
const noContribution: Contribution = { chains: [], sets: [], elements: [], shared: [] };

export class TableRecord {
  readonly f: FamilySyntax;
  private readonly opts: ModeOptions;
  /** The state each service port was last applied with. */
  private readonly states: RecordMap<string, ServicePortState>;
  /** set → element key → the service holding it (the smallest claimant). */
  private readonly holders: Map<string, RecordMap<string, string>>;
  /** "set\0key" → other services that claim the same key (shared hairpin IPs). Sets are replaced, never changed. */
  private readonly contenders: RecordMap<string, ReadonlySet<string>>;
  private readonly sharedUsers: RecordMap<string, number>;
  private ownedRules = 0;
  /** The record this one stages changes of (undefined for a committed record). */
  private readonly base: TableRecord | undefined;

  constructor(f: FamilySyntax, opts: ModeOptions, base?: TableRecord) {
    this.f = f;
    this.opts = opts;
    this.base = base;
    if (!base) {
      this.states = new Map();
      this.holders = new Map();
      this.contenders = new Map();
      this.sharedUsers = new Map();
      return;
    }
    const overlay = <K, V>(m: RecordMap<K, V>): MapOverlay<K, V> => new MapOverlay(m as Map<K, V>);
    this.states = overlay(base.states);
    this.holders = new Map([...base.holders].map(([set, keys]) => [set, overlay(keys)]));
    this.contenders = overlay(base.contenders);
    this.sharedUsers = overlay(base.sharedUsers);
    this.ownedRules = base.ownedRules;
  }

  /** A view of this record to plan changes on; they reach this record only through its commit(). */
  stage(): TableRecord {
    if (this.base) throw new Error('stage() of a staged record');
    return new TableRecord(this.f, this.opts, this);
  }

  /** Writes a staged record's changes into the record it was staged from, and returns that. */
  commit(): TableRecord {
    const base = this.base;
    if (!base) return this;
    (this.states as MapOverlay<string, ServicePortState>).commit();
    for (const [set, keys] of this.holders) {
      if (keys instanceof MapOverlay) keys.commit();
      else base.holders.set(set, keys);
    }
    (this.contenders as MapOverlay<string, ReadonlySet<string>>).commit();
    (this.sharedUsers as MapOverlay<string, number>).commit();
    base.ownedRules = this.ownedRules;
    return base;
  }

  private where() {
    return { family: this.f.nft, table: tableName } as const;
  }

  /** What `s` puts into the table; nothing for a port whose values cannot be written safely. */
  private contributionOf(s: ServicePortState | undefined, refused?: RefusedPort[]): Contribution {
    if (!s || s.family !== this.f.family) return noContribution;
    const c = checkedContribution(s, this.f, this.opts);
    if (!isRefused(c)) return c;
    refused?.push(c);
    return noContribution;
  }

  /** Rules plus elements kproxy holds in this table. */
  count(): number {
    let n = this.ownedRules;
    for (const c of staticChains(this.f, this.opts)) n += c.rules.length;
    for (const name of this.sharedUsers.keys()) n += spreadChain(this.f, this.opts, name).rules.length;
    for (const keys of this.holders.values()) n += keys.size;
    return n;
  }

  /** Every chain the record holds (static, shared spread, per-Service) with its rules: what a repair rewrites. */
  chainRules(): Map<string, readonly string[]> {
    const out = new Map<string, readonly string[]>();
    for (const c of staticChains(this.f, this.opts)) out.set(c.name, c.rules);
    for (const name of this.sharedUsers.keys()) out.set(name, spreadChain(this.f, this.opts, name).rules);
    for (const s of this.states.values()) {
      if (!ownsObjects(s)) continue;
      for (const c of this.contributionOf(s).chains) out.set(c.name, c.rules);
    }
    return out;
  }

  /** The element `key` of `set` as the record holds it ({ value: undefined } in a set), or undefined when none does. */
  elementOf(set: string, key: string): { value: string | undefined } | undefined {
    const h = this.holders.get(set)?.get(key);
    if (h === undefined) return undefined;
    const e = this.contributionOf(this.states.get(h)).elements.find((x) => x.set === set && x.key === key);
    return e && { value: e.value };
  }

  /** Every element of `set` the record holds (for a repair that refills the whole set). */
  elementsOf(set: string): Element[] {
    const keys = this.holders.get(set);
    if (!keys) return [];
    const byHolder = new Map<string, Set<string>>();
    for (const [key, h] of keys) {
      let mine = byHolder.get(h);
      if (!mine) byHolder.set(h, (mine = new Set()));
      mine.add(key);
    }
    const out: Element[] = [];
    for (const [h, mine] of byHolder) {
      for (const e of this.contributionOf(this.states.get(h)).elements) {
        if (e.set !== set || !mine.delete(e.key)) continue;
        out.push(e.value === undefined ? { key: e.key } : { key: e.key, value: e.value });
      }
    }
    return out;
  }

  /** Records `c` for `owner`; returns the elements `owner` now holds. */
  private claim(owner: string, c: Contribution): ElementRef[] {
    const held: ElementRef[] = [];
    for (const e of c.elements) {
      let keys = this.holders.get(e.set);
      if (!keys) this.holders.set(e.set, (keys = new Map()));
      const h = keys.get(e.key);
      if (h === undefined) {
        keys.set(e.key, owner);
        held.push(e);
      } else if (h !== owner) {
        const id = e.set + sep + e.key;
        const others = new Set(this.contenders.get(id));
        if (owner < h) {
          others.add(h);
          keys.set(e.key, owner);
        } else {
          others.add(owner);
        }
        this.contenders.set(id, others);
      }
    }
    for (const name of c.shared) this.sharedUsers.set(name, (this.sharedUsers.get(name) ?? 0) + 1);
    for (const ch of c.chains) this.ownedRules += ch.rules.length;
    return held;
  }

  private release(owner: string, c: Contribution): void {
    for (const e of c.elements) {
      const keys = this.holders.get(e.set);
      const h = keys?.get(e.key);
      const id = e.set + sep + e.key;
      const had = this.contenders.get(id);
      const others = had && new Set(had);
      if (h === owner) {
        let next: string | undefined;
        for (const o of others ?? []) if (next === undefined || o < next) next = o;
        if (next === undefined) {
          keys!.delete(e.key);
        } else {
          keys!.set(e.key, next);
          others!.delete(next);
        }
      } else {
        others?.delete(owner);
      }
      if (others && others.size === 0) this.contenders.delete(id);
      else if (others) this.contenders.set(id, others);
    }
    for (const name of c.shared) {
      const n = (this.sharedUsers.get(name) ?? 0) - 1;
      if (n > 0) this.sharedUsers.set(name, n);
      else this.sharedUsers.delete(name);
    }
    for (const ch of c.chains) this.ownedRules -= ch.rules.length;
  }

  /** A fresh record of `state`, with the elements of a full sync grouped per set. */
  static of(state: NodeState, f: FamilySyntax, opts: ModeOptions, refused: RefusedPort[] = []): { record: TableRecord; elements: Map<string, Element[]>; owned: Contribution[] } {
    const r = new TableRecord(f, opts);
    const elements = new Map<string, Element[]>(staticSets(f).map((s) => [s.name, []]));
    const owned: Contribution[] = [];
    // Smallest key first, so the first claimant of a key is its holder.
    const keys = [...state.services.keys()].sort();
    for (const key of keys) {
      const s = state.services.get(key)!;
      if (s.family !== f.family) continue;
      r.states.set(key, s);
      const c = r.contributionOf(s, refused);
      if (c.chains.length || c.sets.length) owned.push(c);
      for (const e of r.claim(key, c)) {
        let list = elements.get(e.set);
        if (!list) elements.set(e.set, (list = []));
        list.push(e.value === undefined ? { key: e.key } : { key: e.key, value: e.value });
      }
    }
    return { record: r, elements, owned };
  }

  private ownedObjects(): { chains: string[]; sets: SetDef[] } {
    const chains: string[] = [...this.sharedUsers.keys()];
    const sets: SetDef[] = [];
    for (const s of this.states.values()) {
      if (!ownsObjects(s)) continue;
      const c = this.contributionOf(s);
      chains.push(...c.chains.map((ch) => ch.name));
      sets.push(...c.sets);
    }
    return { chains, sets };
  }

  /**
   * The commands of a full sync of `state`, and the new record. Without
   * `previous` (start-up, or after a failure left the kernel unknown) the
   * table is deleted and rebuilt in the same transaction; with it, rules are
   * flushed and re-added, maps refilled, dynamic affinity sets kept, and
   * objects the previous record had but this one lacks are deleted.
   */
  static full(state: NodeState, f: FamilySyntax, opts: ModeOptions, previous: TableRecord | undefined, refused: RefusedPort[] = []): { record: TableRecord; commands: Command[] } {
    const { record, elements, owned } = TableRecord.of(state, f, opts, refused);
    const w = record.where();
    const cmds: Command[] = [{ verb: 'add', object: 'table', ...w }];
    if (previous) cmds.push({ verb: 'flush', object: 'table', ...w });
    else cmds.push({ verb: 'delete', object: 'table', ...w }, { verb: 'add', object: 'table', ...w });

    const sets = [...staticSets(f), ...owned.flatMap((c) => c.sets)];
    const before = previous?.ownedObjects();
    const beforeSets = new Map((before?.sets ?? []).map((s) => [s.name, s]));
    for (const s of sets) {
      // A set whose type or timeout changed is re-created (no rule uses it after "flush table").
      const old = beforeSets.get(s.name);
      if (old && !sameSpec(old, s)) cmds.push({ verb: 'delete', object: old.kind, ...w, name: old.name });
      cmds.push({ verb: 'add', object: s.kind, ...w, name: s.name, spec: s.spec });
      if (previous && !s.spec.flags?.includes('dynamic')) cmds.push({ verb: 'flush', object: s.kind, ...w, name: s.name });
    }
    const shared = [...record.sharedUsers.keys()].sort(naturalCompare).map((n) => spreadChain(f, opts, n));
    const chainDefs: ChainDef[] = [...shared, ...owned.flatMap((c) => c.chains), ...staticChains(f, opts)];
    for (const c of chainDefs) cmds.push(c.base ? { verb: 'add', object: 'chain', ...w, name: c.name, base: c.base } : { verb: 'add', object: 'chain', ...w, name: c.name });
    for (const c of chainDefs) for (const rule of c.rules) cmds.push({ verb: 'add', object: 'rule', ...w, chain: c.name, rule });
    for (const [set, list] of elements) {
      for (let i = 0; i < list.length; i += elementsPerLine) cmds.push({ verb: 'add', object: 'element', ...w, set, elements: list.slice(i, i + elementsPerLine) });
    }
    if (before) {
      const wantChains = new Set(chainDefs.map((c) => c.name));
      for (const name of before.chains) if (!wantChains.has(name)) cmds.push({ verb: 'delete', object: 'chain', ...w, name });
      const wantSets = new Set(sets.map((s) => s.name));
      for (const s of before.sets) if (!wantSets.has(s.name)) cmds.push({ verb: 'delete', object: s.kind, ...w, name: s.name });
    }
    return { record, commands: cmds };
  }

  /**
   * Updates the record for the service ports `keys` (present in `state`, or
   * removed) and returns the commands that bring the kernel along.
   */
  update(state: NodeState, keys: Iterable<string>, refused: RefusedPort[] = []): Command[] {
    const w = this.where();
    // Pass 1, before any change to the record: old and new contributions and
    // the value every touched element key has now.
    const changed: { key: string; prev: Contribution; next: Contribution; s: ServicePortState | undefined }[] = [];
    const prevOf = new Map<string, Contribution>();
    const valueNow = (set: string, key: string, own: Map<string, Contribution>, states: (k: string) => ServicePortState | undefined): { value: string | undefined } | undefined => {
      const h = this.holders.get(set)?.get(key);
      if (h === undefined) return undefined;
      let c = own.get(h);
      if (!c) own.set(h, (c = this.contributionOf(states(h))));
      const e = c.elements.find((x) => x.set === set && x.key === key);
      return e && { value: e.value };
    };
    for (const key of new Set(keys)) {
      const old = this.states.get(key);
      const s = state.services.get(key);
      const next = s && s.family === this.f.family ? s : undefined;
      if (!old && !next) continue;
      const prev = this.contributionOf(old);
      prevOf.set(key, prev);
      changed.push({ key, prev, next: this.contributionOf(next, refused), s: next });
    }
    const touched = new Map<string, { set: string; key: string; before: { value: string | undefined } | undefined }>();
    for (const { prev, next } of changed) {
      for (const e of [...prev.elements, ...next.elements]) {
        const id = e.set + sep + e.key;
        if (!touched.has(id)) touched.set(id, { set: e.set, key: e.key, before: valueNow(e.set, e.key, prevOf, (k) => this.states.get(k)) });
      }
    }
    const sharedBefore = new Map<string, boolean>();
    for (const { prev, next } of changed) for (const n of [...prev.shared, ...next.shared]) if (!sharedBefore.has(n)) sharedBefore.set(n, this.sharedUsers.has(n));

    // Pass 2: objects of the changed services, and the record itself.
    const flushChains: string[] = [];
    const delChains: string[] = [];
    const delSets: SetDef[] = [];
    const addChains: ChainDef[] = [];
    const ruleChains: ChainDef[] = [];
    const addSets: SetDef[] = [];
    for (const { key, prev, next, s } of changed) {
      const prevSets = new Map(prev.sets.map((x) => [x.name, x]));
      const nextSets = new Map(next.sets.map((x) => [x.name, x]));
      let respecified = false;
      for (const [name, def] of prevSets) {
        const n = nextSets.get(name);
        if (!n || !sameSpec(def, n)) delSets.push(def);
        if (n && !sameSpec(def, n)) respecified = true;
      }
      for (const [name, def] of nextSets) {
        const p = prevSets.get(name);
        if (!p || !sameSpec(def, p)) addSets.push(def);
      }
      const prevChains = new Map(prev.chains.map((c) => [c.name, c]));
      const nextChains = new Map(next.chains.map((c) => [c.name, c]));
      for (const [name, c] of prevChains) {
        const n = nextChains.get(name);
        if (!n) {
          flushChains.push(name);
          delChains.push(name);
        } else if (respecified || !sameRules(c.rules, n.rules)) {
          // A set re-created with another spec must first lose every rule using it.
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
      this.release(key, prev);
      this.claim(key, next);
      if (s) this.states.set(key, s);
      else this.states.delete(key);
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

    const nextOf = new Map(changed.map((c) => [c.key, c.next]));
    const delElems: ElementRef[] = [];
    const addElems: ElementRef[] = [];
    for (const { set, key, before } of touched.values()) {
      const after = valueNow(set, key, nextOf, (k) => this.states.get(k));
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
    for (const e of addElems) {
      cmds.push({ verb: 'add', object: 'element', ...w, set: e.set, elements: [e.value === undefined ? { key: e.key } : { key: e.key, value: e.value }] });
    }
    return cmds;
  }
}

const collator = new Intl.Collator('en', { numeric: true });
/** cluster-2 before cluster-10. */
function naturalCompare(a: string, b: string): number {
  return collator.compare(a, b);
}
