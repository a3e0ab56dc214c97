// The tracker's contract, used by the runner and the CLI. Implemented in
// proxy/tracker.ts.
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import type { Changes, NodeState, Protocol } from './model.ts';
import type { SourceEvent } from './source/source.ts';

/** A Service or EndpointSlice the tracker skipped, with every problem found in it. */
export type InvalidObject =
  | { readonly kind: 'Service'; readonly object: V1Service; readonly problems: readonly string[]; readonly action?: ObjectAction }
  | { readonly kind: 'EndpointSlice'; readonly object: V1EndpointSlice; readonly problems: readonly string[]; readonly action?: ObjectAction };

/**
 * What kproxy does about an object: 'skip' it whole (malformed; the last
 * valid version stays), 'refuse' part of it (an address or NodePort an
 * older Service holds, an externalIP outside --external-ip-cidrs), or serve
 * part of it with a 'fallback' (the dataplane cannot do what it asks, e.g.
 * a scheduler whose kernel module is missing).
 */
export type ObjectAction = 'skip' | 'refuse' | 'fallback';

export interface TrackerOptions {
  /** This node's name (--hostname-override or the host name). */
  readonly nodeName: string;
  /** IP families to produce ServicePortStates for. */
  readonly families: readonly (4 | 6)[];
  /**
   * Told of each skipped (malformed) Service or EndpointSlice, once per
   * distinct version and problem list: a relist that brings the same
   * resourceVersion again is not reported again. Must not throw (a throw is
   * logged and ignored).
   */
  readonly onInvalid?: (invalid: InvalidObject) => void;
  /** --external-ip-cidrs: externalIPs outside these are refused (empty: all allowed, as kube-proxy). */
  readonly externalIPCIDRs?: readonly string[];
  /**
   * Protocols the chosen mode does not serve (its descriptor's
   * differences): ports of them are refused and reported like a lost claim.
   */
  readonly unservedProtocols?: { readonly mode: string; readonly protocols: readonly Protocol[] };
}

export interface ServiceTracker {
  /** Records one event; malformed objects are logged with their name and skipped. */
  apply(event: SourceEvent): void;
  /** Number of service ports with unsynced changes (for the pending-changes metric). */
  pending(): number;
  /** True once a 'Synced' event was seen. */
  synced(): boolean;
  /**
   * The current state and everything that changed since the last call.
   * Changes that net to nothing are cancelled. Cheap when little changed:
   * only changed services are recomputed (a Node label change recomputes all).
   * triggerTimes: epoch ms of the EndpointSlices' and Services'
   * `endpoints.kubernetes.io/last-change-trigger-time` annotations (or the
   * time the event arrived) for the network-programming-duration metric.
   */
  snapshot(): { state: NodeState; changes: Changes; triggerTimes: readonly number[] };
  /** Forces the next snapshot's changes to be full (after a failed sync, or periodic resync). */
  requestFull(): void;
}
