// Every zone answered from a Kubernetes API server (one watcher each, in
// config order), and the question every query asks first: does an
// answering watcher own this name? A forward name is under at most one
// zone; a reverse name (PTR) is answered by the first zone that knows the
// address, so each cluster's addresses are answered by that cluster's
// watcher, and an address none knows is forwarded as configured.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../lib/log.ts';
import { ConfigError } from '../lib/errors.ts';
import type { ReflectorTuning } from '../proxy/source/kube-reflector.ts';
import { kubeSourceLabel, type KubeSettings, type ZoneSettings } from './config.ts';
import type { KubeZone } from './kube-zone.ts';
import type { Synth } from './synth.ts';
import type { Query } from './wire.ts';

type KubeZoneModule = typeof import('./kube-zone.ts');

export interface KubeZonesOptions {
  /** Overrides of the proxy's list/watch timings (tests use short retries). */
  readonly tuning?: Partial<ReflectorTuning>;
  /** Loads a zone's API server access (tests may replace it). */
  readonly loadConfig?: (s: KubeSettings) => KubeConfig;
  /** A zone has listed its objects (first sync or a relist). */
  readonly listed?: () => void;
}


export class KubeZones {
  private zones: KubeZone[] = [];
  /** The answering zones, in config order (the hot path's list). */
  private live: KubeZone[] = [];
  /** The zone of the last answer lookup() returned. */
  hitZone: KubeZone | undefined;
  private readonly log: Logger;
  private readonly opts: KubeZonesOptions;
  /** The watch code, loaded with the first zone that needs it. */
  private module: KubeZoneModule | undefined;

  constructor(log: Logger, opts: KubeZonesOptions = {}) {
    this.log = log;
    this.opts = opts;
  }

  get all(): readonly KubeZone[] {
    return this.zones;
  }

  /**
   * The watchers a config asks for: unchanged ones (same suffix and source)
   * are kept with their state, others started, the rest stopped. Throws a
   * ConfigError, changing nothing, when an API server's access cannot be
   * loaded.
   */
  async apply(zones: readonly ZoneSettings[]): Promise<void> {
    const wanted = zones.filter((z) => z.kubernetes !== undefined);
    if (wanted.length === 0 && this.zones.length === 0) return;
    const m = this.module ??= await import('./kube-zone.ts');
    const byKey = new Map(this.zones.map((z) => [`${z.name} ${z.source}`, z]));
    const problems: string[] = [];
    const plan = wanted.map((z) => {
      const s = z.kubernetes as KubeSettings;
      const key = `${z.suffix.toLowerCase().replace(/\.$/, '')}. ${kubeSourceLabel(s)}`;
      const kept = byKey.get(key);
      if (kept) return { z, s, kept, kc: undefined };
      try {
        return { z, s, kept: undefined, kc: (this.opts.loadConfig ?? m.loadZoneConfig)(s) };
      } catch (e) {
        problems.push(`zone ${z.suffix}: ${kubeSourceLabel(s)}: ${(e as Error).message}`);
        return undefined;
      }
    });
    if (problems.length) throw new ConfigError(problems, { code: 'KPROXY_DNS_CONFIG_INVALID', source: 'kubernetes sources' });
    const next: KubeZone[] = [];
    for (const p of plan) {
      if (!p) continue;
      if (p.kept) {
        p.kept.update(p.s);
        byKey.delete(`${p.kept.name} ${p.kept.source}`);
        next.push(p.kept);
        continue;
      }
      const zone = new m.KubeZone(p.z.suffix, p.s, p.kc as KubeConfig, this.opts.tuning ?? {}, this.log, () => this.refresh(), () => this.opts.listed?.());
      next.push(zone);
      zone.start();
    }
    for (const old of byKey.values()) {
      old.stop().catch((e: unknown) => this.log.warn({ zone: old.name, err: (e as Error).message }, 'stopping a watcher failed'));
    }
    this.zones = next;
    this.refresh();
  }

  private refresh(): void {
    this.live = this.zones.filter((z) => z.answering);
  }

  /** The answer of the first answering zone that owns the question name; sets hitZone. */
  lookup(msg: Buffer, q: Query): Synth | undefined {
    const live = this.live;
    for (let i = 0; i < live.length; i++) {
      const s = live[i].names.lookup(msg, q);
      if (s !== undefined) {
        this.hitZone = live[i];
        return s;
      }
    }
    return undefined;
  }

  get any(): boolean {
    return this.live.length > 0;
  }

  async stop(): Promise<void> {
    const zones = this.zones;
    this.zones = [];
    this.live = [];
    await Promise.all(zones.map((z) => z.stop()));
  }
}
