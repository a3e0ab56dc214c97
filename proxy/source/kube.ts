// The `kube` source: Services (all namespaces), EndpointSlices
// (discovery.k8s.io/v1) and this node's Node object, listed and watched
// through @kubernetes/client-node. Objects are emitted as the API server
// serialises them. Which Services to skip (service-proxy-name label,
// headless) is the tracker's decision, not this source's.
import type { KubeConfig, KubernetesObject, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { Logger } from '../../lib/log.ts';
import { loadKubeConfig } from './kube-config.ts';
import { Reflector, type ReflectorTuning, type ResourceSpec } from './kube-reflector.ts';
import type { Emit, Source, SourceEvent } from './source.ts';

export interface KubeSourceOptions {
  /** Path of a kubeconfig file; without it: in-cluster service account, else the default kubeconfig. */
  readonly kubeconfig?: string;
  /** An already loaded kubeconfig (wins over `kubeconfig`). */
  readonly kubeConfig?: KubeConfig;
  /** This node's name: only its Node object is watched. */
  readonly nodeName: string;
  /** Overrides of the defaults below (tests use short retry delays). */
  readonly tuning?: Partial<ReflectorTuning>;
}

/**
 * Defaults for a node agent: pages of 500 (a 10,000-Service cluster lists in
 * 20 requests), 60 s per page; a watch stream silent for 90 s is reopened
 * (the API server's watch cache sends a bookmark about once a minute, so
 * silence beyond that means a dead connection; the same limit bounds
 * opening a stream); server-side watch length 5-10 min; retries from 0.5 s
 * doubling to 30 s.
 */
export const defaultTuning: ReflectorTuning = {
  pageSize: 500,
  listTimeoutMs: 60_000,
  watchIdleTimeoutMs: 90_000,
  minWatchSeconds: 300,
  retryInitialMs: 500,
  retryMaxMs: 30_000,
};

type Kind = 'Service' | 'EndpointSlice' | 'Node';

export class KubeSource implements Source {
  readonly #kc: KubeConfig;
  readonly #nodeName: string;
  readonly #tuning: ReflectorTuning;
  readonly #log: Logger;
  #reflectors: Reflector<KubernetesObject>[] = [];
  #state: 'new' | 'started' | 'stopped' = 'new';
  #abortStart: ((err: Error) => void) | undefined;

  constructor(opts: KubeSourceOptions, log: Logger) {
    if (!opts.nodeName) throw new Error('KubeSource: nodeName is required');
    this.#kc = opts.kubeConfig ?? loadKubeConfig(opts.kubeconfig);
    this.#nodeName = opts.nodeName;
    this.#tuning = { ...defaultTuning, ...opts.tuning };
    this.#log = log.child({ component: 'source', source: 'kube' });
  }

  start(emit: Emit): Promise<void> {
    if (this.#state !== 'new') return Promise.reject(new Error(`KubeSource: start() called when ${this.#state}`));
    this.#state = 'started';
    this.#log.info({ server: this.#kc.getCurrentCluster()?.server, node: this.#nodeName }, 'watching Services, EndpointSlices and this Node');
    const safeEmit = (event: SourceEvent): void => {
      try {
        emit(event);
      } catch (err) {
        // A consumer bug must not stop the watch loop that called us.
        this.#log.error({ err, kind: event.kind }, 'event handler failed');
      }
    };
    return new Promise<void>((resolve, reject) => {
      this.#abortStart = reject;
      const unlisted = new Set<Kind>(['Service', 'EndpointSlice', 'Node']);
      const add = <T extends KubernetesObject>(kind: Kind, spec: Omit<ResourceSpec, 'kind'>, toEvent: (type: 'upsert' | 'delete', obj: T) => SourceEvent) => {
        this.#reflectors.push(new Reflector<T>(this.#kc, { kind, ...spec }, {
          upsert: (obj) => safeEmit(toEvent('upsert', obj)),
          delete: (obj) => safeEmit(toEvent('delete', obj)),
          listed: () => {
            if (!unlisted.delete(kind) || unlisted.size > 0) return;
            this.#abortStart = undefined;
            safeEmit({ kind: 'Synced' });
            resolve();
          },
        }, this.#tuning, this.#log) as Reflector<KubernetesObject>);
      };
      add<V1Service>('Service', { path: '/api/v1/services' }, (type, object) => ({ kind: 'Service', type, object }));
      add<V1EndpointSlice>('EndpointSlice', { path: '/apis/discovery.k8s.io/v1/endpointslices' },
        (type, object) => ({ kind: 'EndpointSlice', type, object }));
      add<V1Node>('Node', { path: '/api/v1/nodes', fieldSelector: `metadata.name=${this.#nodeName}` },
        (type, object) => ({ kind: 'Node', type, object }));
      for (const r of this.#reflectors) r.start();
    });
  }

  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#state = 'stopped';
    await Promise.all(this.#reflectors.map((r) => r.stop()));
    this.#abortStart?.(new Error('KubeSource stopped before the initial list completed'));
    this.#abortStart = undefined;
  }
}
