// A paged LIST of one resource through the client library's own HTTP stack
// (kube-request.ts: same authentication and TLS as its watches). Items are
// returned as the API server sent them (plain JSON), exactly like watch
// events, so every object a source emits has one shape whether it came from
// a list or a watch.
import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import { apiRequest } from './kube-request.ts';

export interface ListOptions {
  /** Items per page (`limit`); large clusters are listed in pages. */
  readonly pageSize: number;
  /** Time allowed for one page, from request to last byte. */
  readonly timeoutMs: number;
  readonly fieldSelector?: string;
  /** Aborts the list (the source is stopping). */
  readonly signal?: AbortSignal;
  /**
   * Optional: what is kept of each item, applied page by page (a consumer
   * that keeps a few fields never holds a whole large list at once).
   */
  readonly transform?: (item: KubernetesObject) => KubernetesObject;
}

/**
 * Lists every object at `path`, following `continue` tokens. Throws on any
 * failed page: a partial list is never returned (it would look like deletions).
 */
export async function listAll<T extends KubernetesObject>(
  kc: KubeConfig, path: string, opts: ListOptions,
): Promise<KubernetesListObject<T>> {
  const items: T[] = [];
  let resourceVersion = '';
  let kind: string | undefined;
  let apiVersion: string | undefined;
  let next: string | undefined;
  do {
    const query = new URLSearchParams({ limit: String(opts.pageSize) });
    if (opts.fieldSelector) query.set('fieldSelector', opts.fieldSelector);
    if (next) query.set('continue', next);
    const text = await apiRequest(kc, 'GET', `${path}?${query}`, `list ${path}`, opts);
    // Raw JSON: the list metadata field is `continue` (the typed model calls it `_continue`).
    const page = JSON.parse(text) as { kind?: string; apiVersion?: string; items?: T[]; metadata?: { resourceVersion?: string; continue?: string } };
    if (!Array.isArray(page.items)) throw new Error(`list ${path}: answer has no items array`);
    // The server leaves kind/apiVersion out of list items; watch events have
    // them. Fill them in so both paths yield the same shape.
    const itemKind = page.kind?.replace(/List$/, '');
    const keep = opts.transform;
    for (const item of page.items) {
      const full = { kind: itemKind, apiVersion: page.apiVersion, ...item };
      items.push(keep ? keep(full) as T : full);
    }
    // Every page of one list is the same snapshot; its version is the first page's.
    resourceVersion ||= page.metadata?.resourceVersion ?? '';
    kind ??= page.kind;
    apiVersion ??= page.apiVersion;
    next = page.metadata?.continue;
  } while (next);
  return { kind, apiVersion, metadata: { resourceVersion }, items };
}
