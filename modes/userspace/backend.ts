// --proxy-mode=userspace: kproxy forwards TCP and UDP itself. A sync makes
// the Service addresses local addresses of the node (added before the
// listeners that need them, removed after), then hands the forwarder its
// new listeners: the whole table on a full sync, the changed listeners
// otherwise. The record of what was applied is committed only when the
// addresses and the forwarder took the plan.
import { inCIDR, ipFamily } from '../../lib/net.ts';
import type { Logger } from '../../lib/log.ts';
import type { Registry } from 'prom-client';
import type { Changes, NodeState } from '../../proxy/model.ts';
import type { Backend, Damage, DriftReport, ModeOptions, Plan } from '../backend.ts';
import { PendingRepairs, type RepairSnapshot } from '../repairs.ts';
import { AppliedRecord } from '../record.ts';
import type { RefusedPort } from '../values.ts';
import { ADDRESS_DEVICE, parseListing, ServiceAddresses, type AddressListing } from './addresses.ts';
import { addressLine, liveLines, listenerLine, sortedLines } from './describe.ts';
import { hostFor, type Host } from './host.ts';
import { registerForwarderMetrics } from './metrics.ts';
import { countOwned, stage, type Applied, type PortNote, type RecordFacts } from './record.ts';
import { forwarderOptions, settingsOf, type UserspaceSettings } from './settings.ts';
import { askStatus, serveStatus, type LiveListener, type StatusAnswer, type StatusRequest, type StatusServer } from './status.ts';
import type { ForwarderLike } from './table-forwarder.ts';
import { listenerKey, type ListenerSpec } from './table.ts';
import { portListeners } from './translate.ts';

export interface UserspacePlan extends Plan {
  /** A full plan: the whole table and the whole address set. */
  readonly table?: { readonly listeners: readonly ListenerSpec[]; readonly addresses: readonly string[] };
  /** A partial plan: listeners to open or update and to close. */
  readonly delta?: { readonly upsert: readonly ListenerSpec[]; readonly remove: readonly string[] };
  readonly addAddresses: readonly string[];
  readonly removeAddresses: readonly string[];
  readonly facts: RecordFacts;
  readonly notes: readonly PortNote[];
  /** The damage this plan repairs, settled once it is applied. */
  readonly repairing: RepairSnapshot<Damage>;
  commit(): Applied;
}

export class UserspaceBackend implements Backend<UserspacePlan> {
  readonly mode = 'userspace' as const;
  readonly #opts: ModeOptions;
  readonly #log: Logger;
  readonly #host: Host;
  readonly #settings: UserspaceSettings;
  readonly #addresses: ServiceAddresses;
  readonly #applied = new AppliedRecord<Applied>();
  #forwarder: ForwarderLike | undefined;
  #starting: Promise<ForwarderLike> | undefined;
  #status: StatusServer | undefined;
  /** Node facts read by the last prepare() of a full sync. */
  #facts: RecordFacts | undefined;
  /** Notes already logged (each once). */
  readonly #said = new Set<string>();
  #closed = false;
  /** What checkDrift found someone else changed, repaired by the next plan. */
  readonly #pending = new PendingRepairs<Damage>();
  /** Applies so far, and whether one runs now (a check that overlapped one reports nothing). */
  #applies = 0;
  #applying = false;

  constructor(opts: ModeOptions, log: Logger) {
    this.#opts = opts;
    this.#log = log;
    this.#host = hostFor(opts.exec);
    this.#settings = settingsOf(opts.settings);
    this.#addresses = new ServiceAddresses(this.#host.exec, log);
  }

  /** The forwarder (started on the first sync). */
  get forwarder(): ForwarderLike | undefined {
    return this.#forwarder;
  }

  async prepare(changes: Changes): Promise<void> {
    if (this.#closed) throw new Error('the userspace backend is closed');
    await this.#start();
    if (!this.#applied.needsFull(changes.full) && this.#pending.full === undefined) return;
    // A full sync reads what it builds on: kproxy0 (made again if someone deleted it), the
    // addresses kproxy holds, and the node's own addresses, where NodePorts listen.
    await this.#addresses.setup();
    this.#facts = this.#factsOf(parseListing((await this.#host.listing()).addresses));
  }

  async #start(): Promise<ForwarderLike> {
    if (this.#forwarder !== undefined) return this.#forwarder;
    this.#starting ??= this.#host.startForwarder(this.#log.child({ component: 'forwarder' }), forwarderOptions(this.#settings, this.#log.level)).then((f) => {
      this.#forwarder = f;
      if (this.#host.live) this.#status = serveStatus((req) => this.#answer(req), this.#log);
      return f;
    }, (e: unknown) => {
      this.#starting = undefined;
      throw e;
    });
    return this.#starting;
  }

  /** NodePort addresses and cluster sources from the node's own addresses. */
  #factsOf(listing: AddressListing): RecordFacts {
    const families = this.#opts.families;
    const ofFamily = (ip: string) => families.includes(ipFamily(ip) as 4 | 6);
    const allowed = this.#opts.nodePortAddresses;
    const node = listing.node.filter(ofFamily);
    const nodePortAddresses = node.filter((ip) => allowed.length === 0 || allowed.some((c) => inCIDR(ip, c))).sort();
    const clusterSources = [
      ...this.#opts.clusterCIDRs.filter((c) => families.includes(ipFamily(c.split('/')[0]) as 4 | 6)),
      ...node.map((ip) => (ip.includes(':') ? `${ip}/128` : `${ip}/32`)),
    ];
    return { nodePortAddresses, nodeAddresses: new Set(listing.node), clusterSources };
  }

  plan(state: NodeState, changes: Changes): UserspacePlan {
    const repairing = this.#pending.snapshot();
    const full = this.#applied.needsFull(changes.full) || repairing.full !== undefined;
    const facts = this.#facts ?? { nodePortAddresses: [], nodeAddresses: new Set<string>(), clusterSources: [] };
    const opts = { families: this.#opts.families, defaultAlgorithm: this.#settings.scheduler };
    const staged = full ? stage(state, state.services.keys(), undefined, facts, opts) : stage(state, changes.services, this.#applied.current, facts, opts);
    // Service addresses someone removed go back, unless this sync lets go of them anyway.
    const removing = new Set(staged.removeAddresses);
    const addAddresses = [...new Set([...staged.addAddresses, ...repairing.items.filter((d) => d.what === 'address' && !removing.has(d.object)).map((d) => d.object)])];
    const base = {
      full, facts, notes: staged.notes, addAddresses, removeAddresses: staged.removeAddresses, commit: staged.commit,
      repairing, repairs: PendingRepairs.repairsOf(repairing, full),
    };
    const refused: RefusedPort[] = staged.refused;
    if (full) {
      const listeners = [...staged.upsert.values()];
      const addresses = staged.addresses();
      return { ...base, table: { listeners, addresses }, size: listeners.length + addresses.length, ...(refused.length ? { refused } : {}) };
    }
    const upsert = [...staged.upsert.values()];
    return {
      ...base, delta: { upsert, remove: staged.remove },
      size: upsert.length + staged.remove.length + addAddresses.length + staged.removeAddresses.length,
      ...(refused.length ? { refused } : {}),
    };
  }

  async apply(plan: UserspacePlan): Promise<void> {
    this.#say(plan.notes);
    this.#applying = true;
    try {
      await this.#send(plan);
    } finally {
      this.#applying = false;
      this.#applies++;
    }
    this.#pending.settle(plan.repairing, plan.full);
  }

  async #send(plan: UserspacePlan): Promise<void> {
    await this.#applied.apply({ commit: plan.commit }, async () => {
      const f = await this.#start();
      if (plan.table !== undefined) {
        // Addresses first (a listener cannot bind one that is not local), stale ones after the listeners that used them closed.
        const want = new Set(plan.table.addresses);
        await this.#addresses.change(want, []);
        await f.apply({ clusterSources: plan.facts.clusterSources, listeners: plan.table.listeners });
        await this.#addresses.sync(want);
      } else if (plan.delta !== undefined) {
        await this.#addresses.change(plan.addAddresses, []);
        if (plan.delta.upsert.length > 0 || plan.delta.remove.length > 0) await f.update(plan.delta);
        await this.#addresses.change([], plan.removeAddresses);
      }
    });
  }

  /** Logs what a plan found to say about a port, once per port and text. */
  #say(notes: readonly PortNote[]): void {
    for (const n of notes) {
      const id = `${n.kind}\u0000${n.key}\u0000${n.text}`;
      if (this.#said.has(id)) continue;
      if (this.#said.size > 10_000) this.#said.clear();
      this.#said.add(id);
      if (n.kind === 'scheduler') this.#log.warn({ servicePort: n.key, scheduler: n.text }, 'the userspace forwarder has no such scheduler (it has rr, lc, p2c, sh): the default is used');
      else if (n.kind === 'conflict') this.#log.warn({ servicePort: n.key, listener: n.text }, 'two Service ports want one address:port: the one that had it keeps it');
      else this.#log.warn({ servicePort: n.key, reason: n.text }, 'Service port not served in userspace mode');
    }
  }

  owned(): Record<string, number> {
    return countOwned(this.#applied.current);
  }

  /** The listener table a full sync would give the forwarder, with the Service addresses, one per line. */
  render(state: NodeState): string {
    const opts = { families: this.#opts.families, defaultAlgorithm: this.#settings.scheduler };
    const staged = stage(state, state.services.keys(), undefined, this.#renderFacts(), opts);
    const head = [
      `# kproxy userspace mode: Service addresses made local to the node (on ${ADDRESS_DEVICE}, or lo without a dummy driver),`,
      '# and listeners: protocol address:port "service port" algorithm -> endpoints (| from cluster -> the endpoints',
      '# of clients inside the cluster under externalTrafficPolicy Local). Endpoints see the node\'s address as the source.',
      ...(this.#facts === undefined ? ['# NodePorts on *: every node address --nodeport-addresses allows (read from the node when kproxy runs).'] : []),
    ];
    const notes = [
      ...staged.refused.map((r) => `# left out: ${r.key}: ${r.reason}`),
      ...staged.notes.filter((n) => n.kind !== 'scheduler').map((n) => `# ${n.kind === 'unserved' ? 'not served' : 'not listening'}: ${n.key}: ${n.text}`),
    ];
    return [...head, ...sortedLines(staged.addresses(), staged.upsert.values()), ...notes].join('\n') + '\n';
  }

  /** One service port's addresses and listeners (as render writes them), found by key alone. */
  describeService(state: NodeState, key: string): string[] {
    const s = state.services.get(key);
    if (s === undefined) return [];
    const r = portListeners(s, this.#renderFacts(), this.#opts.families, this.#settings.scheduler);
    if (r === undefined) return [];
    if ('refused' in r) return [`# left out: ${r.refused}`];
    if ('unserved' in r) return [`# not served: ${r.unserved}`];
    return [
      ...(r.schedulerFallback ? [`# the annotation asks for ${r.schedulerFallback}, which the forwarder does not have: ${this.#settings.scheduler} instead`] : []),
      ...sortedLines(r.addresses, r.listeners),
    ];
  }

  #renderFacts(): RecordFacts {
    return this.#facts ?? { nodePortAddresses: undefined, nodeAddresses: new Set(), clusterSources: [] };
  }

  /** What the running kproxy serves for this port, and how its endpoints fare now. */
  async describeLive(_state: NodeState, key: string): Promise<string[]> {
    let a: StatusAnswer;
    try {
      a = await (this.#forwarder !== undefined && this.#host.live ? this.#answer({ describe: key }) : askStatus({ describe: key }));
    } catch (e) {
      return [`live state: unknown (${(e as Error).message})`];
    }
    if (!a.known) return [`live state (kproxy pid ${a.pid}): it serves nothing for this port (not synced yet, refused, or another port holds its address)`];
    return [`live state (kproxy pid ${a.pid}, ${a.workers} worker${a.workers === 1 ? '' : 's'}, relay ${a.relay}):`, ...liveLines(a.listeners)];
  }

  /** The status socket's answers (explain, dump --live, diff). */
  async #answer(req: StatusRequest): Promise<StatusAnswer> {
    const f = this.#forwarder;
    const cur = this.#applied.current;
    const head = { pid: process.pid, workers: f?.pids.length ?? 0, relay: '' };
    if (f === undefined || cur === undefined) return { ...head, listeners: [], known: false, ...('table' in req ? { addresses: [] } : {}) };
    const specs = new Map(f.table.listeners.map((l) => [listenerKey(l), l]));
    if ('table' in req) {
      const listeners = [...specs].map(([k, spec]): LiveListener => ({ spec, ...(f.failed.has(k) ? { failed: f.failed.get(k) } : {}) }));
      return { ...head, listeners, addresses: [...this.#addresses.owned] };
    }
    const entry = cur.ports.get(req.describe);
    if (entry === undefined || entry.keys.length === 0) return { ...head, listeners: [], known: false };
    const [snap, reports] = await Promise.all([f.snapshot({ endpoints: false }), f.describe(entry.keys)]);
    const byKey = new Map(reports.map((r) => [r.key, r]));
    const listeners = entry.keys.flatMap((k): LiveListener[] => {
      const spec = specs.get(k);
      if (spec === undefined) return [];
      return [{ spec, ...(f.failed.has(k) ? { failed: f.failed.get(k) } : {}), ...(byKey.has(k) ? { report: byKey.get(k) } : {}) }];
    });
    return { ...head, relay: snap.relay, listeners, known: true };
  }

  /**
   * The Service addresses on the node, and the listeners: those of this
   * backend's own forwarder, or else the running kproxy's (asked over its
   * status socket). Lines as render writes them.
   */
  async readKernel(): Promise<string> {
    const listing = parseListing((await this.#host.exec('ip', ['-o', 'address', 'show'])).stdout);
    const out = [`# Service addresses kproxy holds (metric 7717), and the listeners of ${this.#forwarder ? 'this backend' : 'the running kproxy'}`];
    let listeners: LiveListener[] = [];
    if (this.#forwarder !== undefined) {
      const f = this.#forwarder;
      listeners = f.table.listeners.map((spec) => ({ spec, ...(f.failed.has(listenerKey(spec)) ? { failed: f.failed.get(listenerKey(spec)) } : {}) }));
    } else {
      try {
        const a = await askStatus({ table: true }, 60_000);
        out.push(`# kproxy pid ${a.pid}: ${a.listeners.length} listeners`);
        listeners = [...a.listeners];
      } catch (e) {
        out.push(`# listeners unknown: ${(e as Error).message}`);
      }
    }
    const lines = listeners.map(({ spec, failed }) => (failed !== undefined ? `${listenerLine(spec)} (not listening: ${failed})` : listenerLine(spec)));
    return [...out, ...listing.owned.map(addressLine).sort(), ...lines.sort()].join('\n') + '\n';
  }

  /**
   * The periodic check that what kproxy holds is still there, from one `ip`
   * listing and one snapshot of the workers: every Service address kproxy
   * put on the node (a removed one is put back by the next sync, alone),
   * kproxy0 up, the node's own addresses as they were (NodePorts follow
   * them) and every listener bound (those two need a full sync).
   */
  async checkDrift(): Promise<DriftReport> {
    const cur = this.#applied.current;
    const f = this.#forwarder;
    if (cur === undefined || f === undefined) return { damage: [] }; // the next sync is full anyway
    const appliesBefore = this.#applies;
    const { addresses, links } = await this.#host.listing();
    const listing = parseListing(addresses, links);
    let full: string | undefined;
    if (this.#addresses.device === ADDRESS_DEVICE && listing.device !== 'up') full = `${ADDRESS_DEVICE} is ${listing.device}`;
    const have = new Set(listing.owned);
    const missing = [...cur.users.keys()].filter((a) => !have.has(a));
    const nodePorts = this.#factsOf(listing).nodePortAddresses ?? [];
    if (nodePorts.join() !== (cur.facts.nodePortAddresses ?? []).join()) full ??= `the node's addresses changed (NodePorts on ${nodePorts.join(', ') || 'none'})`;
    const expected = f.expectedListening();
    const listening = (await f.snapshot({ endpoints: false })).listening;
    if (listening < expected) full ??= `${expected - listening} listening socket${expected - listening === 1 ? ' is' : 's are'} closed`;
    if (this.#applying || this.#applies !== appliesBefore) return { damage: [] };
    this.#addresses.gone(missing);
    const damage = this.#pending.add(missing.map((a) => ({ key: `address ${a}`, damage: { what: 'address', object: a } })));
    if (full !== undefined) this.#pending.requireFull(full);
    const owed = this.#pending.full;
    return owed !== undefined && (full !== undefined || damage.length) ? { damage, full: owed } : { damage };
  }

  /** Removes the Service addresses kproxy put on the node (and kproxy0), and nothing else. */
  async cleanup(): Promise<void> {
    await this.#addresses.cleanup();
    this.#applied.forget();
    this.#pending.clear();
  }

  /**
   * SIGTERM: keep accepting until a successor listens beside this process
   * (or the handover timeout ends), then stop accepting and let open
   * connections finish within the drain grace period. Addresses stay, for
   * the successor to adopt.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#status?.close();
    const f = this.#forwarder ?? await this.#starting?.catch(() => undefined);
    if (f === undefined) return;
    const r = await f.handover(this.#settings.handoverTimeout, this.#settings.drainGrace);
    this.#log.info(r, 'forwarder stopped');
  }

  registerMetrics(registry: Registry): void {
    registerForwarderMetrics(registry, () => {
      const f = this.#forwarder;
      return f === undefined ? Promise.reject(new Error('not started')) : f.snapshot({ endpoints: false });
    });
  }
}
