// The query pipeline: parse → cache → (coalesced) forward → store → render.
// Transport-free: listeners hand it a message and a reply function.
import type { Logger } from '../lib/log.ts';
import { remaining, renderAnswer, storeAnswer, type StoredAnswer, type TtlLimits } from './answer.ts';
import { AnswerCache, entryQuestion, type CacheEntry, type ZoneCache } from './cache.ts';
import type { DnsCacheConfig, ZoneSettings } from './config.ts';
import { Forwarder, type Forwarded } from './forward.ts';
import type { DnsMetrics } from './metrics.ts';
import {
  emptyAnswer, isRejection, keyFlags, keyNameLen, parseQuery, queryKey, RCODE_REFUSED, RCODE_SERVFAIL, rejectionAnswer, type Query,
} from './wire.ts';
import { KubeZones, type KubeZonesOptions } from './kube-zones.ts';
import type { KubeZone } from './kube-zone.ts';
import { renderSynth, type Synth } from './synth.ts';
import type { Slot } from './metrics.ts';
import dnsPacket from 'dns-packet';
import { wireName, ZoneTable } from './zones.ts';

export interface Zone {
  /** "cluster.local." — the metrics' zone label. */
  readonly name: string;
  readonly settings: ZoneSettings;
  readonly forwarder: Forwarder;
  readonly cache: ZoneCache;
  readonly limits: TtlLimits;
}

/** Where a query came from: for the reply size limit and the metrics' labels. */
export interface Origin {
  /** Small and unique per origin: part of the keys of per-zone metric slots. */
  readonly id: number;
  readonly server: string;
  readonly proto: 'udp' | 'tcp';
  readonly family: '1' | '2';
}

/** The resolver asking itself (an ExternalName's target): no size limit, its own metric label. */
const INTERNAL: Origin = { id: 0, server: 'internal', proto: 'tcp', family: '1' };

/** CNAMEs followed for one client query at most (CoreDNS: 8). */
const MAX_CHASE = 8;

export type Reply = (msg: Buffer) => void;

interface Waiter {
  readonly msg: Buffer;
  readonly q: Query;
  readonly reply: Reply;
  readonly origin: Origin;
  readonly started: number;
}

interface Flight {
  readonly waiters: Waiter[];
}

const TCP_LIMIT = 65535;

/** The largest answer the client's transport takes. */
function replyLimit(origin: Origin, q: Query): number {
  return origin.proto === 'tcp' ? TCP_LIMIT : q.udpSize;
}

export function zoneLabel(suffix: string): string {
  return suffix === '.' ? '.' : suffix.toLowerCase().replace(/\.?$/, '.');
}

export class Resolver {
  readonly cache = new AnswerCache();
  /** Cache hits are rendered here (no allocation per answer). */
  private readonly hitOut = Buffer.allocUnsafeSlow(TCP_LIMIT);
  private table = new ZoneTable<Zone>([]);
  private zoneList: Zone[] = [];
  private readonly inflight = new Map<string, Flight>();
  private readonly log: Logger;
  private readonly metrics: DnsMetrics;
  /** Zones answered from Kubernetes API servers; asked before the cache. */
  readonly kube: KubeZones;
  /** Metric slots of answers from each watched zone, by origin, type and rcode. */
  private readonly kubeSlots = new WeakMap<KubeZone, Map<number, Slot>>();

  constructor(log: Logger, metrics: DnsMetrics, opts: { kube?: KubeZonesOptions } = {}) {
    this.log = log;
    this.metrics = metrics;
    this.kube = new KubeZones(log, opts.kube);
  }

  get zones(): readonly Zone[] {
    return this.zoneList;
  }

  get inflightCount(): number {
    return this.inflight.size;
  }

  /**
   * Installs a validated config's zones; the cache is kept. Throws a
   * ConfigError, changing nothing, when a Kubernetes source's access cannot
   * be loaded.
   */
  async apply(config: DnsCacheConfig): Promise<void> {
    await this.kube.apply(config.zones);
    const old = this.zoneList;
    const hooks = {
      onRequest: (to: string) => this.metrics.forwardRequest(to),
      onResponse: (to: string, rcode: number, s: number) => this.metrics.forwardResponse(to, rcode, s),
      onHealthcheckFailure: (to: string) => this.metrics.healthcheckFailure(to),
      onStateChange: (to: string, healthy: boolean) => {
        this.metrics.upstreamState(to, healthy);
        if (!healthy && this.zoneList.some((z) => z.forwarder.upstreams.some((u) => u.label === to) && z.forwarder.allDown)) {
          this.metrics.healthcheckBroken();
        }
      },
    };
    const zones: Zone[] = config.zones.map((s) => {
      const name = zoneLabel(s.suffix);
      const c = s.cache;
      const cache = this.cache.zone(name, {
        capacity: c.capacity, serveStale: c.serveStale, staleTtl: c.staleTtl, prefetchAmount: c.prefetchAmount, prefetchPercentage: c.prefetchPercentage,
      });
      const forwarder = new Forwarder({
        upstreams: s.upstreams, policy: s.policy, forceTcp: s.forceTcp, maxFails: s.maxFails,
        healthCheckMs: s.healthCheckMs, timeoutMs: s.timeoutMs,
      }, this.log.child({ zone: name }), hooks);
      for (const u of forwarder.upstreams) this.metrics.upstreamState(u.label, true);
      return { name, settings: s, forwarder, cache, limits: { successTtl: c.successTtl, denialTtl: c.denialTtl, minTtl: c.minTtl } };
    });
    this.cache.retainZones(new Set(zones.map((z) => z.name)));
    this.zoneList = zones;
    this.table = new ZoneTable(zones.map((z) => ({ suffix: z.settings.suffix, zone: z })));
    // Queries already sent to the old upstreams may still finish.
    const grace = Math.max(0, ...old.map((z) => z.settings.timeoutMs)) + 1000;
    if (old.length) setTimeout(() => { for (const z of old) z.forwarder.close(); }, grace).unref();
  }

  /**
   * Answers one query: returns the answer when it is ready now (cache hit,
   * error), else calls `later()` once for the Reply to send it with. `msg`
   * may be reused by the caller once this returns; a cache hit's answer is
   * rendered into memory that the next call reuses, so the caller sends or
   * copies it before then.
   */
  handle(msg: Buffer, origin: Origin, later: () => Reply): Buffer | undefined {
    return this.answer(msg, origin, later, 0);
  }

  private answer(msg: Buffer, origin: Origin, later: () => Reply, depth: number): Buffer | undefined {
    const started = performance.now();
    const q = parseQuery(msg);
    if (isRejection(q)) {
      if (q.drop) {
        this.metrics.malformedQuery('drop');
        return undefined;
      }
      this.metrics.malformedQuery('formerr');
      return rejectionAnswer(msg, q);
    }
    if (this.kube.any) {
      const s = this.kube.lookup(msg, q);
      if (s !== undefined) return this.fromWatcher(s, this.kube.hitZone as KubeZone, msg, q, origin, later, started, depth);
    }
    const now = Date.now();
    const e = this.cache.get(msg, q, now);
    const left = e === undefined ? 0 : remaining(e, now);
    if (e !== undefined && left > 0) {
      const out = renderAnswer(e, msg, q, replyLimit(origin, q), now, -1, this.hitOut);
      let slot = e.slot;
      if (slot === undefined || slot.origin !== origin) {
        slot = this.metrics.slot(origin, e.zone.name, q.qtype, e.rcode, e.kind);
        e.slot = slot;
      }
      this.metrics.servedHit(slot, (performance.now() - started) / 1000);
      if (this.cache.hit(e, left)) this.prefetch(e);
      return out;
    }
    const key = queryKey(msg, q);
    const zone = this.table.route(key, q.nameLen);
    if (zone === undefined) {
      this.metrics.served(origin, 'none', q.qtype, RCODE_REFUSED, (performance.now() - started) / 1000);
      return emptyAnswer(msg, q.id, q.flags, q.questionEnd, RCODE_REFUSED, q.hasEdns, false, q.dnssecOk);
    }
    this.metrics.miss(zone.name);
    if (e !== undefined && zone.forwarder.allDown) {
      // Every upstream is known down: answer from the stale entry now and
      // let one background query find out whether they are back.
      this.fly(zone, key, Buffer.from(entryQuestion(e)), q.dnssecOk, q.checkingDisabled);
      return this.staleAnswer(e, msg, q, origin, started);
    }
    // The waiter outlives the caller's buffer.
    const w: Waiter = { msg: Buffer.from(msg), q, reply: later(), origin, started };
    const flight = this.inflight.get(key);
    if (flight) {
      flight.waiters.push(w);
      return undefined;
    }
    this.fly(zone, key, Buffer.from(msg.subarray(12, q.questionEnd)), q.dnssecOk, q.checkingDisabled).waiters.push(w);
    return undefined;
  }

  /** An answer made from a watched API server (rendered like a cache hit). */
  private fromWatcher(s: Synth, zone: KubeZone, msg: Buffer, q: Query, origin: Origin, later: () => Reply, started: number, depth: number): Buffer | undefined {
    if (s.cname !== undefined) return this.chase(s, zone, msg, q, origin, later, started, depth);
    const out = renderSynth(s, msg, q, replyLimit(origin, q), this.hitOut);
    this.countWatcher(s, zone, origin, q.qtype, started);
    return out;
  }

  private countWatcher(s: Synth, zone: KubeZone, origin: Origin, qtype: number, started: number): void {
    // The answer remembers its last series (most are asked by one origin for one type).
    let slot = s.slot as Slot | undefined;
    if (slot === undefined || slot.origin !== origin || s.slotQtype !== qtype) {
      let slots = this.kubeSlots.get(zone);
      if (slots === undefined) this.kubeSlots.set(zone, slots = new Map());
      const key = (origin.id * 65536 + qtype) * 16 + (s.rcode & 0xf);
      slot = slots.get(key);
      if (slot === undefined) slots.set(key, slot = this.metrics.slot(origin, zone.name, qtype, s.rcode, 'other', 'watcher'));
      s.slot = slot;
      s.slotQtype = qtype;
    }
    this.metrics.servedWatcher(slot, (performance.now() - started) / 1000);
  }

  /**
   * An ExternalName: its CNAME, then the target's records of the asked type
   * as this resolver answers them (from the cache, an upstream, or a
   * watcher when the target is a cluster name), as CoreDNS does.
   */
  private chase(s: Synth, zone: KubeZone, query: Buffer, q: Query, origin: Origin, later: () => Reply, started: number, depth: number): Buffer | undefined {
    const limit = replyLimit(origin, q);
    // The answer may come after the caller has reused its buffer.
    const msg = Buffer.from(query.subarray(0, q.questionEnd));
    const finish = (sub: Buffer | undefined): Buffer => {
      let extra: Buffer | undefined;
      let count = 0;
      if (sub !== undefined) {
        try {
          const p = dnsPacket.decode(sub);
          const answers = p.answers ?? [];
          if (answers.length > 0) {
            extra = dnsPacket.encode({ type: 'response', answers } as dnsPacket.Packet).subarray(12);
            count = answers.length;
          }
        } catch {
          // an answer that does not decode adds nothing: the CNAME alone is still right
        }
      }
      this.countWatcher(s, zone, origin, q.qtype, started);
      return renderSynth(s, msg, q, limit, undefined, extra, count);
    };
    const target = s.cname as string;
    // x CNAME x is a loop: the CNAME alone (CoreDNS leaves such records out).
    const own = msg.toString('latin1', 12, 12 + q.nameLen).toLowerCase();
    if (depth >= MAX_CHASE || wireName(target) === own) return finish(undefined);
    const sub = subQuery(target, q.qtype);
    if (sub === undefined) return finish(undefined);
    // The sub-query asks for its reply function at once when it goes
    // upstream: the client's is taken then too (a batch socket's is only
    // valid during the call).
    const now = this.answer(sub, INTERNAL, () => {
      const reply = later();
      return (out) => reply(finish(out));
    }, depth + 1);
    return now === undefined ? undefined : finish(Buffer.from(now));
  }

  /** A datagram too long to be a query (the batch socket's slot): dropped. */
  oversizeQuery(): void {
    this.metrics.malformedQuery('drop');
  }

  private prefetch(e: CacheEntry): void {
    const key = e.key;
    const zone = this.table.route(key, keyNameLen(key));
    if (!zone || this.inflight.has(key)) return;
    e.prefetching = true;
    this.metrics.prefetch(zone.name);
    const f = keyFlags(key);
    this.fly(zone, key, Buffer.from(entryQuestion(e)), f.dnssecOk, f.checkingDisabled);
  }

  /** Starts (or joins) the one upstream query for `key`. */
  private fly(zone: Zone, key: string, question: Buffer, dnssecOk: boolean, cd: boolean): Flight {
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const flight: Flight = { waiters: [] };
    this.inflight.set(key, flight);
    zone.forwarder.resolve(question, dnssecOk, cd).then(
      (res) => this.land(zone, key, flight, res),
      (e: unknown) => {
        this.log.error({ err: (e as Error).message }, 'forwarding failed unexpectedly');
        this.land(zone, key, flight, undefined);
      },
    );
    return flight;
  }

  private land(zone: Zone, key: string, flight: Flight, res: Forwarded | undefined): void {
    this.inflight.delete(key);
    const now = Date.now();
    let answer: StoredAnswer | undefined;
    if (res) {
      answer = storeAnswer(res.msg, res.info, zone.limits, now);
      if (answer.ttl > 0 && answer.kind !== 'other' && !res.info.truncated) {
        this.cache.set(key, zone.cache, answer);
      }
    }
    const failed = !answer || answer.rcode === RCODE_SERVFAIL;
    // A failed refresh falls back to what the cache still holds (fresh or stale).
    const stale = failed ? this.cache.usable(key, now) : undefined;
    if (stale) stale.prefetching = false;
    for (const w of flight.waiters) {
      try {
        this.answerWaiter(zone, w, answer, stale, now);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'sending an answer failed');
      }
    }
  }

  private answerWaiter(zone: Zone, w: Waiter, answer: StoredAnswer | undefined, stale: CacheEntry | undefined, now: number): void {
    if (stale) {
      w.reply(this.staleAnswer(stale, w.msg, w.q, w.origin, w.started));
      return;
    }
    const out = answer
      ? renderAnswer(answer, w.msg, w.q, replyLimit(w.origin, w.q), now)
      : emptyAnswer(w.msg, w.q.id, w.q.flags, w.q.questionEnd, RCODE_SERVFAIL, w.q.hasEdns, false, w.q.dnssecOk);
    w.reply(out);
    this.metrics.served(w.origin, zone.name, w.q.qtype, answer ? answer.rcode : RCODE_SERVFAIL, (performance.now() - w.started) / 1000, 'upstream');
  }

  private staleAnswer(e: CacheEntry, msg: Buffer, q: Query, origin: Origin, started: number): Buffer {
    const now = Date.now();
    const fresh = now - e.storedAt < e.ttl * 1000;
    const ttl = fresh ? -1 : e.zone.policy.serveStale > 0 ? e.zone.policy.staleTtl : -1;
    const out = renderAnswer(e, msg, q, replyLimit(origin, q), now, ttl);
    if (!fresh) this.metrics.servedStale(e.zone.name);
    this.metrics.served(origin, e.zone.name, q.qtype, e.rcode, (performance.now() - started) / 1000, 'cache');
    return out;
  }

  close(): void {
    for (const z of this.zoneList) z.forwarder.close();
    this.kube.stop().catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'stopping the watchers failed'));
  }
}

/** A query for `name` and `qtype` (RD set, no EDNS), or undefined when the name cannot be one. */
function subQuery(name: string, qtype: number): Buffer | undefined {
  const wire = wireName(name);
  if (wire.length > 255) return undefined;
  const out = Buffer.alloc(12 + wire.length + 4);
  out.writeUInt16BE(0x0100, 2);
  out.writeUInt16BE(1, 4);
  out.write(wire, 12, 'latin1');
  out.writeUInt16BE(qtype, 12 + wire.length);
  out.writeUInt16BE(1, 12 + wire.length + 2);
  return out;
}
