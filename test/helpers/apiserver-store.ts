// The object store behind the test API server: one global resourceVersion
// counter (like etcd's revision), the current objects per kind, and the
// history of changes since the last compaction, so that a watch can resume
// from any resourceVersion that has not been compacted away.

export type Kind = 'Service' | 'EndpointSlice' | 'Node' | 'Namespace';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  labels?: Record<string, string>;
  [key: string]: unknown;
}

/** Any Kubernetes object; only apiVersion, kind and metadata are looked at. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [key: string]: unknown;
}

export interface KindInfo {
  readonly kind: Kind;
  readonly apiVersion: string;
  /** URL prefix of the API group version, e.g. /api/v1. */
  readonly prefix: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

export const KINDS: Readonly<Record<Kind, KindInfo>> = {
  Service: { kind: 'Service', apiVersion: 'v1', prefix: '/api/v1', plural: 'services', namespaced: true },
  EndpointSlice: {
    kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', prefix: '/apis/discovery.k8s.io/v1',
    plural: 'endpointslices', namespaced: true,
  },
  Node: { kind: 'Node', apiVersion: 'v1', prefix: '/api/v1', plural: 'nodes', namespaced: false },
  Namespace: { kind: 'Namespace', apiVersion: 'v1', prefix: '/api/v1', plural: 'namespaces', namespaced: false },
};

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Change {
  readonly rv: number;
  readonly kind: Kind;
  readonly type: ChangeType;
  /** The object after the change (for DELETED: as it was, with the deletion's resourceVersion). */
  readonly object: KubeObject;
  /** The object before the change (MODIFIED, DELETED). */
  readonly previous?: KubeObject;
}

/** A reference to an object to remove: the object itself or just its identity. */
export type ObjectRef = KubeObject | { kind: Kind; name: string; namespace?: string };

type Objects = Map<Kind, Map<string, KubeObject>>;

function emptyObjects(): Objects {
  return new Map((Object.keys(KINDS) as Kind[]).map((k) => [k, new Map()]));
}

function cloneObjects(objects: Objects): Objects {
  return new Map([...objects].map(([k, m]) => [k, new Map(m)]));
}

export function kindOf(kind: string | undefined): KindInfo {
  const info = kind === undefined ? undefined : KINDS[kind as Kind];
  if (!info) {
    throw new Error(`test API server: unsupported kind ${JSON.stringify(kind)} (supported: ${Object.keys(KINDS).join(', ')})`);
  }
  return info;
}

function keyOf(info: KindInfo, namespace: string | undefined, name: string | undefined): string {
  if (!name) throw new Error(`test API server: ${info.kind} without metadata.name`);
  if (info.namespaced && !namespace) throw new Error(`test API server: ${info.kind} ${name} without metadata.namespace`);
  return info.namespaced ? `${namespace}/${name}` : name;
}

export class VersionedStore {
  #rv = 1000;
  #uid = 0;
  #current: Objects = emptyObjects();
  /** The objects as they were at #compactedRv; history starts after it. */
  #base: Objects = emptyObjects();
  #compactedRv = 1000;
  #history: Change[] = [];
  #listeners = new Set<(change: Change) => void>();

  /** The newest resourceVersion handed out. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Watches and continue tokens older than this get 410 Gone. */
  get compactedResourceVersion(): number {
    return this.#compactedRv;
  }

  /** Creates or replaces an object; returns the stored copy with its new resourceVersion. */
  upsert(input: KubeObject): KubeObject {
    const info = kindOf(input.kind);
    const meta = input.metadata ?? {};
    const key = keyOf(info, meta.namespace, meta.name);
    const previous = this.#current.get(info.kind)!.get(key);
    const rv = ++this.#rv;
    const object: KubeObject = structuredClone({
      ...input,
      apiVersion: input.apiVersion ?? info.apiVersion,
      kind: info.kind,
      metadata: {
        ...meta,
        uid: meta.uid ?? previous?.metadata?.uid ?? `uid-${++this.#uid}`,
        resourceVersion: String(rv),
      },
    });
    this.#current.get(info.kind)!.set(key, object);
    this.#record({ rv, kind: info.kind, type: previous ? 'MODIFIED' : 'ADDED', object, previous });
    return structuredClone(object);
  }

  /** Deletes an object; returns what was deleted, or undefined if it did not exist. */
  remove(ref: ObjectRef): KubeObject | undefined {
    const info = kindOf(ref.kind);
    const meta = 'metadata' in ref && ref.metadata ? ref.metadata : (ref as { name?: string; namespace?: string });
    const key = keyOf(info, meta.namespace, meta.name);
    const previous = this.#current.get(info.kind)!.get(key);
    if (!previous) return undefined;
    const rv = ++this.#rv;
    this.#current.get(info.kind)!.delete(key);
    const object = structuredClone({ ...previous, metadata: { ...previous.metadata, resourceVersion: String(rv) } });
    this.#record({ rv, kind: info.kind, type: 'DELETED', object, previous });
    return structuredClone(object);
  }

  /** Forgets all history: any resourceVersion older than the current one is now expired. */
  compact(): void {
    this.#base = cloneObjects(this.#current);
    this.#compactedRv = this.#rv;
    this.#history = [];
  }

  get(kind: Kind, name: string, namespace?: string): KubeObject | undefined {
    const obj = this.#current.get(kind)!.get(keyOf(KINDS[kind], namespace, name));
    return obj && structuredClone(obj);
  }

  /**
   * The objects of one kind sorted by namespace/name, as they were at `atRv`
   * (default: now). Undefined if `atRv` has been compacted away.
   */
  list(kind: Kind, atRv = this.#rv): KubeObject[] | undefined {
    let objects: Map<string, KubeObject>;
    if (atRv >= this.#rv) {
      objects = this.#current.get(kind)!;
    } else if (atRv < this.#compactedRv) {
      return undefined;
    } else {
      objects = new Map(this.#base.get(kind)!);
      for (const c of this.#history) {
        if (c.rv > atRv) break;
        if (c.kind !== kind) continue;
        const key = keyOf(KINDS[kind], c.object.metadata?.namespace, c.object.metadata?.name);
        if (c.type === 'DELETED') objects.delete(key);
        else objects.set(key, c.object);
      }
    }
    return [...objects.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, o]) => structuredClone(o));
  }

  /** Changes of one kind after `rv`, oldest first; undefined if `rv` has been compacted away. */
  changesSince(kind: Kind, rv: number): Change[] | undefined {
    if (rv < this.#compactedRv) return undefined;
    return this.#history.filter((c) => c.rv > rv && c.kind === kind);
  }

  /** Calls `fn` for every later change (synchronously, in order); returns the unsubscribe function. */
  subscribe(fn: (change: Change) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #record(change: Change): void {
    this.#history.push(change);
    for (const fn of this.#listeners) fn(change);
  }
}
