// A paged LIST of one resource through the client library's own HTTP stack
// (same authentication and TLS as its watches). Items are returned as the
// API server sent them (plain JSON), exactly like watch events, so every
// object a source emits has one shape whether it came from a list or a watch.
import {
  HttpMethod, IsomorphicFetchHttpLibrary, RequestContext,
  type KubeConfig, type KubernetesListObject, type KubernetesObject,
} from '@kubernetes/client-node';

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

/** A non-200 answer from the API server. */
export class ApiError extends Error {
  readonly statusCode: number;
  readonly reason: string;
  constructor(statusCode: number, reason: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

const http = new IsomorphicFetchHttpLibrary();

/**
 * Lists every object at `path`, following `continue` tokens. Throws on any
 * failed page: a partial list is never returned (it would look like deletions).
 */
export async function listAll<T extends KubernetesObject>(
  kc: KubeConfig, path: string, opts: ListOptions,
): Promise<KubernetesListObject<T>> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('no current cluster in the kubeconfig');
  const items: T[] = [];
  let resourceVersion = '';
  let kind: string | undefined;
  let apiVersion: string | undefined;
  let next: string | undefined;
  do {
    const url = new URL(server + path);
    url.searchParams.set('limit', String(opts.pageSize));
    if (opts.fieldSelector) url.searchParams.set('fieldSelector', opts.fieldSelector);
    if (next) url.searchParams.set('continue', next);
    const ctx = new RequestContext(url.toString(), HttpMethod.GET);
    ctx.setHeaderParam('Accept', 'application/json');
    await kc.applySecurityAuthentication(ctx);
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    ctx.setSignal(opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout);
    const resp = await http.send(ctx).toPromise();
    const text = await resp.body.text();
    if (resp.httpStatusCode !== 200) throw apiError(path, resp.httpStatusCode, text);
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

function apiError(path: string, statusCode: number, body: string): ApiError {
  let reason = '';
  let message = body.slice(0, 200);
  try {
    const status = JSON.parse(body) as { reason?: string; message?: string };
    reason = status.reason ?? '';
    message = status.message ?? message;
  } catch {
    // not a Status object: keep the start of the body
  }
  return new ApiError(statusCode, reason, `list ${path}: HTTP ${statusCode}${reason ? ` ${reason}` : ''}: ${message}`);
}
