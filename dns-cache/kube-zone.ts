// One zone answered from a Kubernetes API server: the proxy's own
// list/watch code (proxy/source: paged lists, watches with bookmarks,
// relist on 410 Gone, retries with backoff, the last state kept while the
// API server is away) for Services, EndpointSlices and Namespaces, trimmed
// to what DNS needs, feeding KubeNames. It answers only while it is in
// step: not before all three have been listed once, and not after its API
// server has been unreachable for longer than the staleness bound; then
// the zone forwards to its DNS upstreams, as without a watcher. This module
// (and with it the Kubernetes client library, tens of megabytes) is loaded
// only when a zone has a Kubernetes source (kube-zones.ts).
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../lib/log.ts';
import { Reflector, type ReflectorTuning } from '../proxy/source/kube-reflector.ts';
import { defaultTuning } from '../proxy/source/kube.ts';
import { kubeSourceLabel, type KubeSettings } from './config.ts';
import { loadKubeConfig } from '../proxy/source/kube-config.ts';
import { KubeNames } from './kube-names.ts';
import { trimNamespace, trimService, trimSlice, type DnsNamespace, type DnsService, type DnsSlice } from './kube-objects.ts';

export type KubeZoneState = 'syncing' | 'answering' | 'stale';

type Kind = 'Service' | 'EndpointSlice' | 'Namespace';

export class KubeZone {
  /** "cluster.local." (the metrics' zone label). */
  readonly name: string;
  readonly source: string;
  readonly names: KubeNames;
  private settings: KubeSettings;
  private readonly log: Logger;
  private readonly reflectors: Array<Reflector<KubernetesObject>> = [];
  private readonly unlisted = new Set<Kind>(['Service', 'EndpointSlice', 'Namespace']);
  private readonly failing = new Set<Kind>();
  private failingSince: number | undefined;
  private staleTimer: NodeJS.Timeout | undefined;
  private stateNow: KubeZoneState = 'syncing';
  private readonly onState: (zone: KubeZone) => void;
  private readonly onListed: () => void;
  /** Since when the zone forwards (not synced, or stale); undefined while answering. */
  forwardingSince: number | undefined = Date.now();

  constructor(
    suffix: string, settings: KubeSettings, kc: KubeConfig, tuning: Partial<ReflectorTuning>, log: Logger,
    onState: (zone: KubeZone) => void, onListed: () => void = () => undefined,
  ) {
    this.name = `${suffix.toLowerCase().replace(/\.$/, '')}.`;
    this.settings = settings;
    this.source = kubeSourceLabel(settings);
    this.log = log.child({ zone: this.name, source: this.source });
    this.onState = onState;
    this.onListed = onListed;
    this.names = new KubeNames(suffix, { ttl: settings.ttl, pods: settings.pods });
    const t = { ...defaultTuning, ...tuning };
    const add = <T extends KubernetesObject>(kind: Kind, path: string, trim: (o: KubernetesObject) => T, up: (o: T) => void, del: (o: T) => void): void => {
      this.reflectors.push(new Reflector<KubernetesObject>(kc, { kind, path, transform: trim }, {
        upsert: (o) => this.guard(kind, () => up(o as T)),
        delete: (o) => this.guard(kind, () => del(o as T)),
        listed: () => this.listed(kind),
        failed: () => this.failed(kind),
        recovered: () => this.recovered(kind),
      }, t, this.log));
    };
    const n = this.names;
    add<DnsService>('Service', '/api/v1/services', trimService, (o) => n.upsertService(o), (o) => n.deleteService(o));
    add<DnsSlice>('EndpointSlice', '/apis/discovery.k8s.io/v1/endpointslices', trimSlice, (o) => n.upsertSlice(o), (o) => n.deleteSlice(o));
    add<DnsNamespace>('Namespace', '/api/v1/namespaces', trimNamespace, (o) => n.upsertNamespace(o), (o) => n.deleteNamespace(o));
  }

  get state(): KubeZoneState {
    return this.stateNow;
  }

  get answering(): boolean {
    return this.stateNow === 'answering';
  }

  start(): void {
    this.log.info({ staleAfterMs: this.settings.staleAfterMs, ttl: this.settings.ttl }, 'watching Services, EndpointSlices and Namespaces; forwarding to the DNS upstreams until they are listed');
    for (const r of this.reflectors) r.start();
  }

  async stop(): Promise<void> {
    clearTimeout(this.staleTimer);
    await Promise.all(this.reflectors.map((r) => r.stop()));
  }

  /** New answer TTL, staleness bound or pod setting (config reload); the watch goes on. */
  update(settings: KubeSettings): void {
    const before = this.settings;
    this.settings = settings;
    if (before.ttl !== settings.ttl || before.pods !== settings.pods) this.names.setOptions({ ttl: settings.ttl, pods: settings.pods });
    if (before.staleAfterMs !== settings.staleAfterMs && this.failingSince !== undefined) this.armStaleTimer();
  }

  /** A bad object must not stop the watch that delivered it: it is logged and left out. */
  private guard(kind: Kind, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ kind, err: (err as Error).message }, 'an object could not be turned into DNS names; it is left out');
    }
  }

  private setState(next: KubeZoneState, fields: Record<string, unknown>, msg: string): void {
    if (next === this.stateNow) return;
    this.stateNow = next;
    if (next === 'answering') {
      this.forwardingSince = undefined;
      this.log.info(fields, msg);
    } else {
      this.forwardingSince = Date.now();
      this.log.warn(fields, msg);
    }
    this.onState(this);
  }

  private listed(kind: Kind): void {
    const first = this.unlisted.delete(kind);
    // Once all three are in (and after every later relist), not between them.
    if (this.unlisted.size === 0) this.onListed();
    if (!first || this.unlisted.size > 0) return;
    const size = this.names.size;
    this.setState(this.failingSince !== undefined && Date.now() - this.failingSince > this.settings.staleAfterMs ? 'stale' : 'answering',
      size, 'answering this zone from the API server');
  }

  private failed(kind: Kind): void {
    this.failing.add(kind);
    if (this.failingSince !== undefined) return;
    this.failingSince = Date.now();
    this.armStaleTimer();
  }

  private armStaleTimer(): void {
    clearTimeout(this.staleTimer);
    const since = this.failingSince ?? Date.now();
    const wait = Math.max(0, since + this.settings.staleAfterMs - Date.now());
    this.staleTimer = setTimeout(() => {
      if (this.failingSince === undefined || this.stateNow !== 'answering') return;
      this.setState('stale', { failing: [...this.failing], staleAfterMs: this.settings.staleAfterMs },
        'the API server has been unreachable for longer than the staleness bound: forwarding this zone to its DNS upstreams');
    }, wait);
    this.staleTimer.unref();
  }

  private recovered(kind: Kind): void {
    this.failing.delete(kind);
    if (this.failing.size > 0) return;
    this.failingSince = undefined;
    clearTimeout(this.staleTimer);
    if (this.stateNow === 'stale') this.setState('answering', this.names.size, 'the API server is reachable again: answering this zone from it');
  }
}

/** A zone's API server access: its kubeconfig file, or the in-cluster service account. Throws a KproxyError. */
export function loadZoneConfig(s: KubeSettings): KubeConfig {
  return s.kubeconfig === undefined ? loadKubeConfig(undefined, { inCluster: true }) : loadKubeConfig(s.kubeconfig);
}
