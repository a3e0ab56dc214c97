// A small in-process Kubernetes API server for tests: list and watch of
// Services, EndpointSlices (discovery.k8s.io/v1), Nodes and Namespaces over plain HTTP
// on 127.0.0.1, speaking the real protocol closely enough that
// @kubernetes/client-node talks to it unchanged.
//
//   const api = await TestApiServer.start();
//   api.upsert({ kind: 'Service', metadata: { namespace: 'ns', name: 'web' }, spec: {...} });
//   new KubeSource({ kubeconfig: api.kubeconfigPath(), nodeName: 'node-a' }, log);
//   api.compact(); api.cutStreams();            // next watch resumes with 410 Gone → relist
//   await api.pause(); ... await api.resume();  // API server unreachable for a while
//   await api.close();
//
// Protocol covered:
// - GET <prefix>[/namespaces/<ns>]/<plural>: a <Kind>List with
//   metadata.resourceVersion; `limit` + `continue` paging over a consistent
//   snapshot (an expired continue token gets 410); fieldSelector on
//   metadata.name / metadata.namespace; equality-based labelSelector. Items
//   carry no kind/apiVersion, as from the real server.
// - GET <prefix>[/namespaces/<ns>]/<plural>/<name>: one object.
// - ?watch=true: newline-delimited JSON events {type, object}. Without a
//   resourceVersion (or "0") the current objects come first as ADDED; with
//   resourceVersion=N every change after N is replayed, then live changes
//   follow. N older than the last compact() gets one ERROR event carrying a
//   Status with code 410 (reason Expired) and the stream ends, as the real
//   server does. allowWatchBookmarks=true enables BOOKMARK events
//   (bookmark(), or every `bookmarkIntervalMs`). timeoutSeconds ends the
//   stream cleanly. Objects leaving a selector are sent as DELETED.
// - POST /api/v1/namespaces/<ns>/events and
//   /apis/events.k8s.io/v1/namespaces/<ns>/events: the Event is checked as
//   the real server does the basics (namespace of the path = metadata's =
//   the involved object's; a name; no duplicate name), answered 201 and kept
//   in `events` (not listed or watched). rejectEvents(403) makes every later
//   Event POST fail with that status, as missing RBAC does.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fieldMatcher, labelMatcher, SelectorError, type Matcher } from './apiserver-selectors.ts';
import {
  KINDS, VersionedStore, type Change, type Kind, type KindInfo, type KubeObject, type ObjectRef,
} from './apiserver-store.ts';

export type { Kind, KubeObject, ObjectRef } from './apiserver-store.ts';

/** One request as the server saw it (in arrival order). */
export interface ApiRequest {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly watch: boolean;
  /** HTTP status answered (0 until answered). */
  status: number;
}

export interface TestApiServerOptions {
  /** Send a BOOKMARK to every watch that allows them at this interval (default: only on bookmark()). */
  readonly bookmarkIntervalMs?: number;
}

/** An Event POSTed to the server, as received. */
export interface RecordedEvent {
  /** 'v1' (core) or 'events.k8s.io/v1'. */
  readonly apiVersion: string;
  readonly namespace: string;
  /** The Event as stored (with uid, resourceVersion and creationTimestamp). */
  readonly object: KubeObject;
}

/** How an unreachable API server looks: connections refused, or every request answered 503. */
export type PauseMode = 'refuse' | 'unavailable';

interface OpenWatch {
  readonly info: KindInfo;
  readonly res: ServerResponse;
  readonly bookmarks: boolean;
  close(): void;
}

type Route = { info: KindInfo; namespace?: string; name?: string };

function status(code: number, reason: string, message: string): KubeObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function route(path: string): Route | undefined {
  const m = path.match(/^(\/api\/v1|\/apis\/[^/]+\/[^/]+)(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?\/?$/);
  if (!m) return undefined;
  const [, prefix, namespace, plural, name] = m;
  const info = Object.values(KINDS).find((k) => k.prefix === prefix && k.plural === plural);
  if (!info || (namespace !== undefined && !info.namespaced)) return undefined;
  return { info, namespace: namespace && decodeURIComponent(namespace), name: name && decodeURIComponent(name) };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export class TestApiServer {
  /** Every request received, oldest first. */
  readonly requests: ApiRequest[] = [];
  readonly store = new VersionedStore();
  /** Every Event accepted, oldest first. */
  readonly events: RecordedEvent[] = [];

  #rejectEvents: number | undefined;
  #eventSeq = 0;

  #server: Server;
  #port = 0;
  #paused: PauseMode | undefined;
  #watches = new Set<OpenWatch>();
  #sockets = new Set<Socket>();
  #bookmarkTimer: NodeJS.Timeout | undefined;
  #dir: string | undefined;

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Starts a server on 127.0.0.1 with an ephemeral port. */
  static async start(opts: TestApiServerOptions = {}): Promise<TestApiServer> {
    const server = createServer();
    const api = new TestApiServer(server);
    server.on('request', (req, res) => api.#handle(req, res));
    server.on('connection', (socket) => {
      api.#sockets.add(socket);
      socket.on('close', () => api.#sockets.delete(socket));
    });
    await api.#listen(0);
    if (opts.bookmarkIntervalMs) {
      api.#bookmarkTimer = setInterval(() => api.bookmark(), opts.bookmarkIntervalMs);
      api.#bookmarkTimer.unref();
    }
    return api;
  }

  /** http://127.0.0.1:<port> */
  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** Number of watch streams open right now. */
  get openWatches(): number {
    return this.#watches.size;
  }

  /** Current (newest) resourceVersion. */
  get resourceVersion(): string {
    return String(this.store.resourceVersion);
  }

  /** Creates or replaces an object (kind: Service | EndpointSlice | Node | Namespace); returns it with its resourceVersion. */
  upsert(obj: KubeObject): KubeObject {
    return this.store.upsert(obj);
  }

  /** Deletes an object (the object itself, or {kind, namespace, name}); returns what was deleted. */
  remove(ref: ObjectRef): KubeObject | undefined {
    return this.store.remove(ref);
  }

  /** Forgets all history: a watch or continue token from an older resourceVersion now gets 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that allowed bookmarks. */
  bookmark(): void {
    for (const w of this.#watches) {
      if (!w.bookmarks) continue;
      w.res.write(JSON.stringify({
        type: 'BOOKMARK',
        object: { kind: w.info.kind, apiVersion: w.info.apiVersion, metadata: { resourceVersion: this.resourceVersion } },
      }) + '\n');
    }
  }

  /** Destroys every open watch connection without a clean end (as a network cut does). */
  cutStreams(): void {
    for (const w of [...this.#watches]) {
      w.close();
      w.res.socket?.destroy();
    }
  }

  /** Ends every open watch cleanly (as a server-side timeout does). */
  endStreams(): void {
    for (const w of [...this.#watches]) {
      w.close();
      w.res.end();
    }
  }

  /**
   * Makes the server unreachable: open streams are cut, and new requests are
   * refused at the TCP level ('refuse', the default) or answered 503
   * ('unavailable'). The store still accepts upsert/remove/compact meanwhile.
   */
  async pause(mode: PauseMode = 'refuse'): Promise<void> {
    if (this.#paused) throw new Error('test API server: already paused');
    this.#paused = mode;
    this.cutStreams();
    if (mode === 'refuse') {
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      for (const s of this.#sockets) s.destroy();
      await closed;
    }
  }

  /** Makes the server reachable again on the same port. */
  async resume(): Promise<void> {
    const mode = this.#paused;
    if (!mode) throw new Error('test API server: not paused');
    if (mode === 'refuse') await this.#listen(this.#port);
    this.#paused = undefined;
  }

  /**
   * Writes (once) a kubeconfig file for this server — plain http
   * (insecure-skip-tls-verify, which the client library requires for
   * http), no credentials — and returns its path. It is removed by close().
   */
  kubeconfigPath(): string {
    this.#dir ??= mkdtempSync(join(tmpdir(), 'kproxy-apiserver-'));
    const path = join(this.#dir, 'kubeconfig');
    writeFileSync(path, [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${this.url}`,
      // the client library only allows plain http with this set
      '    insecure-skip-tls-verify: true',
      'users:',
      '- name: test',
      '  user: {}',
      'contexts:',
      '- name: test',
      '  context:',
      '    cluster: test',
      '    user: test',
      'current-context: test',
      '',
    ].join('\n'));
    return path;
  }

  /** Answers every later Event POST with this HTTP status (e.g. 403 Forbidden); undefined accepts them again. */
  rejectEvents(code: number | undefined): void {
    this.#rejectEvents = code;
  }

  /** Resolves once at least `n` watches are open; rejects after `timeoutMs`. */
  async waitForWatches(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#watches.size < n) {
      if (Date.now() > deadline) {
        throw new Error(`test API server: ${this.#watches.size} watches open after ${timeoutMs} ms, expected ${n}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops the server, cuts every connection and removes the kubeconfig file. */
  async close(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    this.cutStreams();
    if (this.#server.listening) {
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      for (const s of this.#sockets) s.destroy();
      await closed;
    }
    if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
  }

  async #listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const addr = this.#server.address();
    if (addr && typeof addr === 'object') this.#port = addr.port;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    const entry: ApiRequest = { method: req.method ?? '', path: url.pathname, query, watch, status: 0 };
    this.requests.push(entry);
    const reply = (code: number, body: KubeObject): void => {
      entry.status = code;
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };

    if (this.#paused) {
      reply(503, status(503, 'ServiceUnavailable', 'the server is currently unable to handle the request'));
      return;
    }
    const events = url.pathname.match(/^(\/api\/v1|\/apis\/events\.k8s\.io\/v1)\/namespaces\/([^/]+)\/events\/?$/);
    if (req.method === 'POST' && events) {
      const apiVersion = events[1] === '/api/v1' ? 'v1' : 'events.k8s.io/v1';
      readBody(req).then(
        (text) => {
          const answer = this.#createEvent(apiVersion, decodeURIComponent(events[2]), text);
          reply(answer.code, answer.body);
        },
        (err: Error) => reply(400, status(400, 'BadRequest', err.message)),
      );
      return;
    }
    if (req.method !== 'GET') {
      reply(405, status(405, 'MethodNotAllowed', `${req.method} is not supported by the test API server`));
      return;
    }
    const r = route(url.pathname);
    if (!r) {
      reply(404, status(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`));
      return;
    }
    let match: Matcher;
    try {
      const byField = fieldMatcher(url.searchParams.get('fieldSelector'));
      const byLabel = labelMatcher(url.searchParams.get('labelSelector'));
      const ns = r.namespace;
      match = (o) => (ns === undefined || o.metadata?.namespace === ns) && byField(o) && byLabel(o);
    } catch (err) {
      if (!(err instanceof SelectorError)) throw err;
      reply(400, status(400, 'BadRequest', err.message));
      return;
    }

    if (r.name !== undefined) {
      const obj = this.store.get(r.info.kind, r.name, r.namespace);
      if (obj) reply(200, obj);
      else reply(404, status(404, 'NotFound', `${r.info.plural} "${r.name}" not found`));
      return;
    }
    if (watch) {
      entry.status = 200;
      this.#watch(r.info, match, url.searchParams, res);
      return;
    }
    const list = this.#list(r.info, match, url.searchParams);
    reply(list.code, list.body);
  }

  #createEvent(apiVersion: string, namespace: string, text: string): { code: number; body: KubeObject } {
    if (this.#rejectEvents !== undefined) {
      const code = this.#rejectEvents;
      const reason = code === 403 ? 'Forbidden' : code === 429 ? 'TooManyRequests' : 'InternalError';
      return { code, body: status(code, reason, `events is refused by the test API server (HTTP ${code})`) };
    }
    let obj: KubeObject;
    try {
      obj = JSON.parse(text) as KubeObject;
    } catch {
      return { code: 400, body: status(400, 'BadRequest', 'request body is not JSON') };
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      return { code: 400, body: status(400, 'BadRequest', 'request body is not an object') };
    }
    const meta = obj.metadata ?? {};
    if (meta.namespace !== undefined && meta.namespace !== namespace) {
      return { code: 400, body: status(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request') };
    }
    const about = (apiVersion === 'v1' ? obj.involvedObject : obj.regarding) as { namespace?: string } | undefined;
    const invalid: string[] = [];
    if (!meta.name) invalid.push('metadata.name: Required value');
    if (about?.namespace !== namespace) invalid.push(`${apiVersion === 'v1' ? 'involvedObject' : 'regarding'}.namespace: does not match event.namespace`);
    if (invalid.length > 0) return { code: 422, body: status(422, 'Invalid', `Event "${meta.name ?? ''}" is invalid: ${invalid.join(', ')}`) };
    if (this.events.some((e) => e.namespace === namespace && e.object.metadata?.name === meta.name)) {
      return { code: 409, body: status(409, 'AlreadyExists', `events "${meta.name}" already exists`) };
    }
    const stored: KubeObject = {
      ...obj,
      kind: 'Event',
      apiVersion,
      metadata: {
        ...meta, namespace, uid: `event-uid-${++this.#eventSeq}`,
        resourceVersion: String(this.#eventSeq), creationTimestamp: new Date().toISOString(),
      },
    };
    this.events.push({ apiVersion, namespace, object: stored });
    return { code: 201, body: stored };
  }

  #list(info: KindInfo, match: Matcher, params: URLSearchParams): { code: number; body: KubeObject } {
    let atRv = this.store.resourceVersion;
    let after = '';
    const token = params.get('continue');
    if (token) {
      try {
        ({ rv: atRv, after } = JSON.parse(Buffer.from(token, 'base64url').toString()));
      } catch {
        return { code: 400, body: status(400, 'BadRequest', 'invalid continue token') };
      }
    }
    const all = this.store.list(info.kind, atRv);
    if (!all) {
      return {
        code: 410,
        body: status(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result.'),
      };
    }
    const keyed = all.filter(match).map((o) => ({ key: `${o.metadata?.namespace ?? ''}/${o.metadata?.name}`, o }));
    const rest = after ? keyed.filter((k) => k.key > after) : keyed;
    const limit = Number(params.get('limit') ?? 0);
    const page = limit > 0 ? rest.slice(0, limit) : rest;
    const metadata: Record<string, unknown> = { resourceVersion: String(atRv) };
    if (page.length < rest.length) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: atRv, after: page.at(-1)!.key })).toString('base64url');
      metadata.remainingItemCount = rest.length - page.length;
    }
    return {
      code: 200,
      // Like the real server, list items carry no kind/apiVersion (the list says it once).
      body: {
        kind: `${info.kind}List`, apiVersion: info.apiVersion, metadata,
        items: page.map(({ o: { kind: _k, apiVersion: _v, ...rest } }) => rest),
      },
    };
  }

  #watch(info: KindInfo, match: Matcher, params: URLSearchParams, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const send = (type: string, object: KubeObject): void => {
      res.write(JSON.stringify({ type, object }) + '\n');
    };
    const deliver = (c: Change): void => {
      const was = c.previous !== undefined && c.type !== 'ADDED' && match(c.previous);
      const is = c.type !== 'DELETED' && match(c.object);
      if (c.type === 'DELETED') {
        if (was) send('DELETED', c.object);
      } else if (was && is) send('MODIFIED', c.object);
      else if (is) send('ADDED', c.object);
      else if (was) send('DELETED', c.object);
    };

    const rvParam = params.get('resourceVersion');
    if (!rvParam || rvParam === '0') {
      for (const o of this.store.list(info.kind)!) if (match(o)) send('ADDED', o);
    } else {
      const rv = Number(rvParam);
      const changes = Number.isInteger(rv) ? this.store.changesSince(info.kind, rv) : undefined;
      if (!changes) {
        const message = Number.isInteger(rv)
          ? `too old resource version: ${rv} (${this.store.compactedResourceVersion})`
          : `invalid resourceVersion ${JSON.stringify(rvParam)}`;
        send('ERROR', status(Number.isInteger(rv) ? 410 : 400, Number.isInteger(rv) ? 'Expired' : 'BadRequest', message));
        res.end();
        return;
      }
      for (const c of changes) deliver(c);
    }

    const unsubscribe = this.store.subscribe((c) => {
      if (c.kind === info.kind) deliver(c);
    });
    let timer: NodeJS.Timeout | undefined;
    const w: OpenWatch = {
      info, res, bookmarks: params.get('allowWatchBookmarks') === 'true',
      close: () => {
        unsubscribe();
        clearTimeout(timer);
        this.#watches.delete(w);
      },
    };
    this.#watches.add(w);
    res.on('close', w.close);
    const timeoutSeconds = Number(params.get('timeoutSeconds') ?? 0);
    if (timeoutSeconds > 0) {
      timer = setTimeout(() => {
        w.close();
        res.end();
      }, timeoutSeconds * 1000);
    }
  }
}
