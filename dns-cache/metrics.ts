// Prometheus metrics under CoreDNS's names (dns, cache, forward plugins) so
// existing NodeLocal DNSCache dashboards keep working. A registry of its
// own keeps dns-cache independent of the proxy's metrics. Label children
// are looked up once per distinct label set and kept.
import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import { FastCounter, FastHistogram, type CounterSeries, type HistogramSeries } from './fast-metrics.ts';

const TYPE_NAMES: Record<number, string> = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV',
  35: 'NAPTR', 43: 'DS', 48: 'DNSKEY', 64: 'SVCB', 65: 'HTTPS', 255: 'ANY', 257: 'CAA',
};
const RCODE_NAMES: Record<number, string> = {
  0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED', 16: 'BADVERS',
};

export function typeName(t: number): string {
  return TYPE_NAMES[t] ?? 'other';
}
export function rcodeName(r: number): string {
  return r < 0 ? 'malformed' : (RCODE_NAMES[r] ?? `RCODE${r}`);
}

// CoreDNS's buckets: exponential from 0.25 ms, factor 2, 16 buckets.
const DURATION_BUCKETS = Array.from({ length: 16 }, (_, i) => 0.00025 * 2 ** i);

interface Inc { inc(v?: number): void }
interface Obs { observe(v: number): void }

export interface CacheSizes {
  /** [zone, success entries, denial entries] */
  zones(): Iterable<{ readonly name: string; readonly success: number; readonly denial: number }>;
  /** Zones answered from an API server: whether each answers now, and what it holds. */
  kubeZones?(): Iterable<{
    readonly name: string; readonly source: string; readonly answering: boolean;
    readonly objects: { readonly services: number; readonly endpointSlices: number; readonly namespaces: number; readonly names: number };
  }>;
}

/** Where an answer came from: made from a watched API server, the cache, or an upstream. */
export type AnswerSource = 'watcher' | 'cache' | 'upstream';

/** The series one kind of answered query touches, resolved once. */
export interface Slot {
  /** The client origin the slot counts for. */
  readonly origin: SlotOrigin;
  readonly req: CounterSeries;
  readonly resp: CounterSeries;
  readonly dur: HistogramSeries;
  /** coredns_cache_hits_total series (for answers from the cache). */
  readonly hit: CounterSeries;
  /** kproxy_dns_cache_answers_total series (by source). */
  readonly src: CounterSeries;
}

export interface SlotOrigin {
  readonly server: string;
  readonly proto: string;
  readonly family: string;
}

export class DnsMetrics {
  readonly registry = new Registry();
  private readonly requests = new FastCounter('coredns_dns_requests_total', 'Counter of DNS requests made per zone, protocol and family.');
  private readonly responses = new FastCounter('coredns_dns_responses_total', 'Counter of response status codes.');
  readonly duration = new FastHistogram('coredns_dns_request_duration_seconds', 'Histogram of the time (in seconds) each request took.', DURATION_BUCKETS);
  private readonly hits = new FastCounter('coredns_cache_hits_total', 'The count of cache hits.');
  private readonly misses = new FastCounter('coredns_cache_misses_total', 'The count of cache misses.');
  private readonly answers = new FastCounter('kproxy_dns_cache_answers_total', 'Answers by zone and source: watcher (made from a watched API server), cache, upstream.');
  private readonly prefetches: Counter<string>;
  private readonly stale: Counter<string>;
  private readonly fwdRequests: Counter<string>;
  private readonly fwdResponses: Counter<string>;
  private readonly fwdDuration: Histogram<string>;
  private readonly hcFailures: Counter<string>;
  private readonly hcBroken: Counter<string>;
  private readonly upstreamHealthy: Gauge<string>;
  private readonly malformed: Counter<string>;
  private readonly tcpRefused: Counter<string>;
  private readonly tcpReclaimed: Counter<string>;
  readonly reloadFailed: Counter<string>;
  private readonly slots = new Map<string, Slot>();
  private readonly missSeries = new Map<string, CounterSeries>();
  private readonly children = new Map<string, Inc | Obs>();

  constructor(sizes: CacheSizes, evictions: () => number) {
    const registers = [this.registry];
    for (const m of [this.requests, this.responses, this.duration, this.hits, this.misses, this.answers]) {
      this.registry.registerMetric(m as unknown as Metric);
    }
    this.prefetches = new Counter({ name: 'coredns_cache_prefetch_total', help: 'The number of times the cache has prefetched a cached item.', labelNames: ['server', 'zones'], registers });
    this.stale = new Counter({ name: 'coredns_cache_served_stale_total', help: 'The number of requests served from stale cache entries.', labelNames: ['server', 'zones'], registers });
    new Gauge({
      name: 'coredns_cache_entries', help: 'The number of elements in the cache.', labelNames: ['server', 'type', 'zones'], registers,
      collect() {
        this.reset();
        for (const z of sizes.zones()) {
          this.set({ server: 'dns', type: 'success', zones: z.name }, z.success);
          this.set({ server: 'dns', type: 'denial', zones: z.name }, z.denial);
        }
      },
    });
    new Gauge({
      name: 'coredns_cache_evictions', help: 'Entries evicted because a zone cache was full (since start).', registers,
      collect() { this.set(evictions()); },
    });
    new Gauge({
      name: 'kproxy_dns_cache_kubernetes_answering', help: '1 while a zone is answered from its API server; 0 while it forwards (not listed yet, or the API server unreachable for longer than the staleness bound).',
      labelNames: ['zone', 'source'], registers,
      collect() {
        this.reset();
        for (const z of sizes.kubeZones?.() ?? []) this.set({ zone: z.name, source: z.source }, z.answering ? 1 : 0);
      },
    });
    new Gauge({
      name: 'kproxy_dns_cache_kubernetes_objects', help: 'What a zone answered from an API server holds: services, endpointslices, namespaces, names.',
      labelNames: ['zone', 'kind'], registers,
      collect() {
        this.reset();
        for (const z of sizes.kubeZones?.() ?? []) {
          for (const [kind, n] of Object.entries(z.objects)) this.set({ zone: z.name, kind: kind.toLowerCase() }, n);
        }
      },
    });
    this.fwdRequests = new Counter({ name: 'coredns_forward_requests_total', help: 'Counter of requests made per upstream.', labelNames: ['to'], registers });
    this.fwdResponses = new Counter({ name: 'coredns_forward_responses_total', help: 'Counter of responses received per upstream.', labelNames: ['to', 'rcode'], registers });
    this.fwdDuration = new Histogram({ name: 'coredns_forward_request_duration_seconds', help: 'Histogram of the time each request took.', labelNames: ['to', 'rcode'], buckets: DURATION_BUCKETS, registers });
    this.hcFailures = new Counter({ name: 'coredns_forward_healthcheck_failures_total', help: 'Counter of the number of failed healthchecks.', labelNames: ['to'], registers });
    this.hcBroken = new Counter({ name: 'coredns_forward_healthcheck_broken_total', help: 'Counter of the number of complete failures of the healthchecks.', registers });
    this.upstreamHealthy = new Gauge({ name: 'kproxy_dns_cache_upstream_healthy', help: '1 while the upstream is up, 0 after max_fails failures until a health check passes.', labelNames: ['to'], registers });
    this.malformed = new Counter({ name: 'kproxy_dns_cache_malformed_queries_total', help: 'Queries refused as malformed, by what was done with them.', labelNames: ['action'], registers });
    this.tcpRefused = new Counter({ name: 'kproxy_dns_cache_tcp_refused_total', help: 'TCP connections closed on accept: the client address was at its cap (per_client), or every slot was busy (total).', labelNames: ['reason'], registers });
    this.tcpReclaimed = new Counter({ name: 'kproxy_dns_cache_tcp_reclaimed_total', help: 'Idle TCP connections closed to make room for a new one at the total cap.', registers });
    this.reloadFailed = new Counter({ name: 'coredns_reload_failed_total', help: 'Counter of the number of failed reload attempts.', registers });
  }

  private child<T extends Inc | Obs>(key: string, make: () => T): T {
    let c = this.children.get(key) as T | undefined;
    if (c === undefined) {
      c = make();
      this.children.set(key, c);
    }
    return c;
  }

  /**
   * The series for queries from `o` in `zone` of type `qtype` answered with
   * `rcode` from `source` (a cache hit's `kind` says success or denial).
   */
  slot(o: SlotOrigin, zone: string, qtype: number, rcode: number, kind: string, source: AnswerSource = 'cache'): Slot {
    const key = `${o.server}\0${o.proto}\0${zone}\0${qtype}\0${rcode}\0${kind}\0${source}`;
    let s = this.slots.get(key);
    if (s === undefined) {
      const type = typeName(qtype);
      s = {
        origin: o,
        req: this.requests.seriesFor({ server: o.server, zone, proto: o.proto, family: o.family, type }),
        resp: this.responses.seriesFor({ server: o.server, zone, rcode: rcodeName(rcode) }),
        dur: this.duration.seriesFor({ server: o.server, zone, type }),
        hit: this.hits.seriesFor({ server: 'dns', type: kind === 'denial' ? 'denial' : 'success', zones: zone }),
        src: this.answers.seriesFor({ zone, source }),
      };
      this.slots.set(key, s);
    }
    return s;
  }

  /** One answered client query (not a fresh cache hit); `source` undefined: answered locally (REFUSED). */
  served(o: SlotOrigin, zone: string, qtype: number, rcode: number, seconds: number, source?: AnswerSource): void {
    const s = this.slot(o, zone, qtype, rcode, 'other', source ?? 'upstream');
    s.req.value++;
    s.resp.value++;
    if (source !== undefined) s.src.value++;
    this.duration.observe(s.dur, seconds);
  }

  /** One query answered from the cache through a resolved slot. */
  servedHit(s: Slot, seconds: number): void {
    s.hit.value++;
    s.req.value++;
    s.resp.value++;
    s.src.value++;
    this.duration.observe(s.dur, seconds);
  }

  /** One query answered from a watched API server through a resolved slot. */
  servedWatcher(s: Slot, seconds: number): void {
    s.req.value++;
    s.resp.value++;
    s.src.value++;
    this.duration.observe(s.dur, seconds);
  }

  miss(zone: string): void {
    let m = this.missSeries.get(zone);
    if (m === undefined) {
      m = this.misses.seriesFor({ server: 'dns', zones: zone });
      this.missSeries.set(zone, m);
    }
    m.value++;
  }
  prefetch(zone: string): void {
    this.prefetches.inc({ server: 'dns', zones: zone });
  }
  servedStale(zone: string): void {
    this.stale.inc({ server: 'dns', zones: zone });
  }
  forwardRequest(to: string): void {
    this.child(`fq\0${to}`, () => this.fwdRequests.labels({ to })).inc();
  }
  forwardResponse(to: string, rcode: number, seconds: number): void {
    const r = rcodeName(rcode);
    this.child(`fr\0${to}\0${r}`, () => this.fwdResponses.labels({ to, rcode: r })).inc();
    this.child(`fd\0${to}\0${r}`, () => this.fwdDuration.labels({ to, rcode: r })).observe(seconds);
  }
  healthcheckFailure(to: string): void {
    this.hcFailures.inc({ to });
  }
  healthcheckBroken(): void {
    this.hcBroken.inc();
  }
  upstreamState(to: string, healthy: boolean): void {
    this.upstreamHealthy.set({ to }, healthy ? 1 : 0);
  }
  tcpRefusedConnection(reason: 'per_client' | 'total'): void {
    this.tcpRefused.inc({ reason });
  }
  tcpReclaimedConnection(): void {
    this.tcpReclaimed.inc();
  }
  malformedQuery(action: 'formerr' | 'drop'): void {
    this.child(`mal\0${action}`, () => this.malformed.labels({ action })).inc();
  }
}

