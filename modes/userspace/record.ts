// The userspace backend's record of what it applied, and the plan that
// takes it to a new NodeState: which listeners each service port holds,
// which Service addresses are in use (and by how many ports), and which
// listener keys a port wanted but another port held (two Services on one
// address:port, e.g. an externalIP equal to a node address serving a
// NodePort). A partial plan recomputes only the changed ports and the
// ports waiting for a listener one of them let go.
import { ipFamily } from '../../lib/net.ts';
import type { NodeState } from '../../proxy/model.ts';
import { MapOverlay, type RecordMap } from '../record.ts';
import type { RefusedPort } from '../values.ts';
import { listenerKey, type Algorithm, type ListenerSpec } from './table.ts';
import { portListeners, type NodeFacts } from './translate.ts';
import type { Family } from '../../proxy/model.ts';

export interface PortEntry {
  /** Listener keys this port holds. */
  readonly keys: readonly string[];
  /** Listener keys it wants that another port holds. */
  readonly blocked: readonly string[];
  readonly addresses: readonly string[];
}

/** Node facts of a record: fixed between full syncs. */
export interface RecordFacts extends NodeFacts {
  /** The table's cluster sources: pods' ranges and the node's addresses. */
  readonly clusterSources: readonly string[];
}

export interface Applied {
  readonly facts: RecordFacts;
  readonly ports: Map<string, PortEntry>;
  /** Listener key → the service port holding it. */
  readonly owner: Map<string, string>;
  /** Listener key → service ports waiting for it. */
  readonly waiting: Map<string, ReadonlySet<string>>;
  /** Service address → how many service ports use it. */
  readonly users: Map<string, number>;
}

/** Something to say about a port once (not a failure of the sync). */
export interface PortNote {
  readonly key: string;
  readonly kind: 'unserved' | 'scheduler' | 'conflict';
  readonly text: string;
}

export interface Staged {
  /** Listeners to open or update, by key. */
  readonly upsert: Map<string, ListenerSpec>;
  /** Listener keys no port holds any more. */
  readonly remove: string[];
  /** Service addresses that came into use, and out of use. */
  readonly addAddresses: string[];
  readonly removeAddresses: string[];
  readonly refused: RefusedPort[];
  readonly notes: PortNote[];
  /** The record once this is applied. */
  commit(): Applied;
  /** Every address in use in the next record (full plans). */
  addresses(): string[];
}

export interface Options {
  readonly families: readonly Family[];
  readonly defaultAlgorithm: Algorithm;
}

/**
 * Plans `work` (service port keys) against `current` (undefined: from
 * nothing, a full plan). Pure: `current` is read through overlays and
 * changes only when commit() is called.
 */
export function stage(state: NodeState, work: Iterable<string>, current: Applied | undefined, facts: RecordFacts, opts: Options): Staged {
  const base: Applied = current ?? { facts, ports: new Map(), owner: new Map(), waiting: new Map(), users: new Map() };
  const ports = new MapOverlay(base.ports);
  const owner = new MapOverlay(base.owner);
  const waiting = new MapOverlay(base.waiting);
  const users = new MapOverlay(base.users);
  const touchedAddresses = new Set<string>();
  const freed: string[] = [];
  const todo = new Set<string>();

  const release = (k: string): void => {
    const e = ports.get(k);
    if (e === undefined) return;
    for (const key of e.keys) {
      if (owner.get(key) === k) {
        owner.delete(key);
        freed.push(key);
      }
    }
    for (const key of e.blocked) {
      const w = new Set(waiting.get(key));
      w.delete(k);
      if (w.size === 0) waiting.delete(key);
      else waiting.set(key, w);
    }
    for (const a of e.addresses) {
      const n = (users.get(a) ?? 0) - 1;
      if (n > 0) users.set(a, n);
      else users.delete(a);
      touchedAddresses.add(a);
    }
    ports.delete(k);
  };
  const queue = [...work];
  let scanned = 0;
  for (let i = 0; i < queue.length; i++) {
    const k = queue[i];
    if (todo.has(k)) continue;
    todo.add(k);
    release(k);
    // Ports waiting for a listener this one let go are planned again too.
    for (; scanned < freed.length; scanned++) for (const other of waiting.get(freed[scanned]) ?? []) if (!todo.has(other)) queue.push(other);
  }

  const upsert = new Map<string, ListenerSpec>();
  const refused: RefusedPort[] = [];
  const notes: PortNote[] = [];
  // Sorted: when two ports want one listener in the same plan, the same one wins every time.
  for (const k of [...todo].sort()) {
    const s = state.services.get(k);
    if (s === undefined) continue;
    const r = portListeners(s, facts, opts.families, opts.defaultAlgorithm);
    if (r === undefined) continue;
    if ('refused' in r) {
      refused.push({ key: k, reason: r.refused });
      continue;
    }
    if ('unserved' in r) {
      notes.push({ key: k, kind: 'unserved', text: r.unserved });
      continue;
    }
    if (r.schedulerFallback !== undefined) notes.push({ key: k, kind: 'scheduler', text: r.schedulerFallback });
    const keys: string[] = [];
    const blocked: string[] = [];
    for (const l of r.listeners) {
      const key = listenerKey(l);
      const holder = owner.get(key);
      if (holder !== undefined && holder !== k) {
        blocked.push(key);
        waiting.set(key, new Set([...(waiting.get(key) ?? []), k]));
        notes.push({ key: k, kind: 'conflict', text: `${key} is served for ${holder}` });
        continue;
      }
      owner.set(key, k);
      keys.push(key);
      upsert.set(key, l);
    }
    for (const a of r.addresses) {
      users.set(a, (users.get(a) ?? 0) + 1);
      touchedAddresses.add(a);
    }
    ports.set(k, { keys, blocked, addresses: r.addresses });
  }

  const remove = [...new Set(freed)].filter((key) => !owner.has(key));
  const addAddresses: string[] = [];
  const removeAddresses: string[] = [];
  for (const a of touchedAddresses) {
    const was = (base.users.get(a) ?? 0) > 0;
    const is = (users.get(a) ?? 0) > 0;
    if (is && !was) addAddresses.push(a);
    else if (was && !is) removeAddresses.push(a);
  }
  return {
    upsert, remove, addAddresses, removeAddresses, refused, notes,
    commit: () => ({
      facts,
      ports: commitMap(ports),
      owner: commitMap(owner),
      waiting: commitMap(waiting),
      users: commitMap(users),
    }),
    addresses: () => [...users.keys()],
  };
}

function commitMap<K, V>(m: RecordMap<K, V>): Map<K, V> {
  return (m as MapOverlay<K, V>).commit();
}

/** Listener counts per protocol, and addresses, for Backend.owned(). */
export function countOwned(r: Applied | undefined): Record<string, number> {
  if (r === undefined) return {};
  let tcp = 0;
  let udp = 0;
  for (const key of r.owner.keys()) {
    if (key.startsWith('TCP/')) tcp++;
    else udp++;
  }
  let v4 = 0;
  for (const a of r.users.keys()) if (ipFamily(a) === 4) v4++;
  return { 'tcp listeners': tcp, 'udp listeners': udp, 'ipv4 addresses': v4, 'ipv6 addresses': r.users.size - v4 };
}
