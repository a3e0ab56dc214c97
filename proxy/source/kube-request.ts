// One request to the API server through the client library's own HTTP
// stack and authentication (whatever the kubeconfig says: tokens, client
// certificates, exec plugins), with plain JSON in and out: kproxy needs no
// generated API class for its lists and Events (client-library.ts).
import type { KubeConfig } from '@kubernetes/client-node';
// The library's module itself, not its index (which loads all its generated code: client-library.ts).
import { HttpMethod, IsomorphicFetchHttpLibrary, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';

/** A non-2xx answer from the API server. */
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

export interface RequestOptions {
  /** Time allowed, from request to last byte. */
  readonly timeoutMs: number;
  /** Aborts the request (the caller is stopping). */
  readonly signal?: AbortSignal;
  /** Sent as JSON. */
  readonly body?: unknown;
}

const http = new IsomorphicFetchHttpLibrary();

/**
 * GET or POST `path` (with its query) on the kubeconfig's current cluster;
 * resolves with the answer's body text on 2xx, throws an ApiError naming
 * `what` otherwise.
 */
export async function apiRequest(kc: KubeConfig, method: 'GET' | 'POST', path: string, what: string, opts: RequestOptions): Promise<string> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('no current cluster in the kubeconfig');
  const ctx = new RequestContext(server + path, method === 'GET' ? HttpMethod.GET : HttpMethod.POST);
  ctx.setHeaderParam('Accept', 'application/json');
  if (opts.body !== undefined) {
    ctx.setHeaderParam('Content-Type', 'application/json');
    ctx.setBody(JSON.stringify(opts.body));
  }
  await kc.applySecurityAuthentication(ctx);
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  ctx.setSignal(opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout);
  const resp = await http.send(ctx).toPromise();
  const text = await resp.body.text();
  if (resp.httpStatusCode < 200 || resp.httpStatusCode > 299) throw apiError(what, resp.httpStatusCode, text);
  return text;
}

/** The API server's Status object (reason, message) when the body is one. */
function apiError(what: string, statusCode: number, body: string): ApiError {
  let reason = '';
  let message = body.slice(0, 200);
  try {
    const status = JSON.parse(body) as { reason?: string; message?: string };
    reason = status.reason ?? '';
    message = status.message ?? message;
  } catch {
    // not a Status object: keep the start of the body
  }
  return new ApiError(statusCode, reason, `${what}: HTTP ${statusCode}${reason ? ` ${reason}` : ''}: ${message}`);
}
