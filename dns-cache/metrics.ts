// Prometheus metrics under CoreDNS's names (dns, cache, forward plugins) so
// existing NodeLocal DNSCache dashboards keep working. A registry of its
// own keeps dns-cache independent of the proxy's metrics. Label children
// are looked up once per distinct label set and kept.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

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
}

export class DnsMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<string>;
  private readonly responses: Counter<string>;
  private readonly duration: Histogram<string>;
  private readonly hits: Counter<string>;
  private readonly misses: Counter<string>;
  private readonly prefetches: Counter<string>;
  private readonly stale: Counter<string>;
  private readonly fwdRequests: Counter<string>;
  private readonly fwdResponses: Counter<string>;
  private readonly fwdDuration: Histogram<string>;
  private readonly hcFailures: Counter<string>;
  private readonly hcBroken: Counter<string>;
  private readonly upstreamHealthy: Gauge<string>;
  private readonly malformed: Counter<string>;
  readonly reloadFailed: Counter<string>;
  private readonly children = new Map<string, Inc | Obs>();

  constructor(sizes: CacheSizes, evictions: () => number) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'coredns_dns_requests_total', help: 'Counter of DNS requests made per zone, protocol and family.', labelNames: ['server', 'zone', 'proto', 'family', 'type'], registers });
    this.responses = new Counter({ name: 'coredns_dns_responses_total', help: 'Counter of response status codes.', labelNames: ['server', 'zone', 'rcode'], registers });
    this.duration = new Histogram({ name: 'coredns_dns_request_duration_seconds', help: 'Histogram of the time (in seconds) each request took.', labelNames: ['server', 'zone', 'type'], buckets: DURATION_BUCKETS, registers });
    this.hits = new Counter({ name: 'coredns_cache_hits_total', help: 'The count of cache hits.', labelNames: ['server', 'type', 'zones'], registers });
    this.misses = new Counter({ name: 'coredns_cache_misses_total', help: 'The count of cache misses.', labelNames: ['server', 'zones'], registers });
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
    this.fwdRequests = new Counter({ name: 'coredns_forward_requests_total', help: 'Counter of requests made per upstream.', labelNames: ['to'], registers });
    this.fwdResponses = new Counter({ name: 'coredns_forward_responses_total', help: 'Counter of responses received per upstream.', labelNames: ['to', 'rcode'], registers });
    this.fwdDuration = new Histogram({ name: 'coredns_forward_request_duration_seconds', help: 'Histogram of the time each request took.', labelNames: ['to', 'rcode'], buckets: DURATION_BUCKETS, registers });
    this.hcFailures = new Counter({ name: 'coredns_forward_healthcheck_failures_total', help: 'Counter of the number of failed healthchecks.', labelNames: ['to'], registers });
    this.hcBroken = new Counter({ name: 'coredns_forward_healthcheck_broken_total', help: 'Counter of the number of complete failures of the healthchecks.', registers });
    this.upstreamHealthy = new Gauge({ name: 'kproxy_dns_cache_upstream_healthy', help: '1 while the upstream is up, 0 after max_fails failures until a health check passes.', labelNames: ['to'], registers });
    this.malformed = new Counter({ name: 'kproxy_dns_cache_malformed_queries_total', help: 'Queries refused as malformed, by what was done with them.', labelNames: ['action'], registers });
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

  /** One answered client query. */
  served(server: string, zone: string, proto: string, family: string, qtype: number, rcode: number, seconds: number): void {
    const key = `${server}\0${zone}\0${proto}\0${family}\0${qtype}\0${rcode}`;
    let set = this.children.get(key) as unknown as ServedSet | undefined;
    if (set === undefined) {
      const type = typeName(qtype);
      set = {
        req: this.requests.labels({ server, zone, proto, family, type }),
        resp: this.responses.labels({ server, zone, rcode: rcodeName(rcode) }),
        dur: this.duration.labels({ server, zone, type }),
      };
      this.children.set(key, set as unknown as Inc);
    }
    set.req.inc();
    set.resp.inc();
    set.dur.observe(seconds);
  }

  hit(zone: string, kind: 'success' | 'denial' | 'other'): void {
    this.child(`h\0${zone}\0${kind}`, () => this.hits.labels({ server: 'dns', type: kind === 'denial' ? 'denial' : 'success', zones: zone })).inc();
  }
  miss(zone: string): void {
    this.child(`m\0${zone}`, () => this.misses.labels({ server: 'dns', zones: zone })).inc();
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
  malformedQuery(action: 'formerr' | 'drop'): void {
    this.child(`mal\0${action}`, () => this.malformed.labels({ action })).inc();
  }
}

interface ServedSet { req: Inc; resp: Inc; dur: Obs }
