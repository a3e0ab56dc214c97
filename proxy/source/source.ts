// A source of Kubernetes objects: the API server (kube) or a YAML file
// (file). Both emit the same events; nothing downstream knows which is used.
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';

export type SourceEvent =
  | { readonly kind: 'Service'; readonly type: 'upsert' | 'delete'; readonly object: V1Service }
  | { readonly kind: 'EndpointSlice'; readonly type: 'upsert' | 'delete'; readonly object: V1EndpointSlice }
  | { readonly kind: 'Node'; readonly type: 'upsert' | 'delete'; readonly object: V1Node }
  /** Every kind has been listed once: the first sync may run. */
  | { readonly kind: 'Synced' };

export type Emit = (event: SourceEvent) => void;

export interface Source {
  /** Starts listing and watching; resolves once the initial list has been emitted (after 'Synced'). */
  start(emit: Emit): Promise<void>;
  /** Stops watching. Never emits deletions for what it had. */
  stop(): Promise<void>;
}
