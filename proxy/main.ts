// `kproxy` (run): wires source → tracker → runner → backend.
//
// Start-up order: health and metrics servers (probes get 503 until the
// first sync) → source, waiting for the initial list → tracker → remove
// other modes' rules (so switching iptables ↔ nftables leaves nothing
// stale) → first full sync, which adopts what a previous kproxy left
// (never flush first: traffic must not see an empty table) → runner.
//
// SIGTERM/SIGINT stop everything and LEAVE the rules in place, so traffic
// keeps flowing while kproxy restarts or is upgraded. An unreachable API
// server never removes rules either: they stay as last programmed.
import { KproxyError } from '../lib/errors.ts';
import { hostExec, type Exec } from '../lib/exec.ts';
import { clearStaleUdp } from '../modes/conntrack.ts';
import { modeOf, otherModes } from '../modes/registry.ts';
import type { ProxyConfig } from './config.ts';
import { HealthCheckNodePorts } from './health-check-nodeports.ts';
import { ProxierHealth, startHealthServer } from './health.ts';
import type { HttpHandle } from '../lib/http-server.ts';
import { loadSource, nodeAddresses, type LoadedSource } from './load-source.ts';
import type { Logger } from '../lib/log.ts';
import { startMemoryReducer, type ReducerOptions } from '../lib/memory-reducer.ts';
import { ProxyMetrics, startMetricsServer } from './metrics.ts';
import { healthCheckHosts, modeOptions, requireTools } from './mode-options.ts';
import { Runner, type SyncListener } from './runner.ts';
import { loadKubeConfig } from './source/kube-config.ts';
import { KubeEventRecorder } from './source/kube-events.ts';
import type { InvalidObject, ServiceTracker } from './tracker-api.ts';

export interface RunHooks {
  /** Resolves when kproxy should stop (default: SIGTERM or SIGINT). */
  readonly stopSignal?: Promise<string>;
  /** Where kernel tools run (default: this host). */
  readonly exec?: Exec;
}

function signals(): { promise: Promise<string>; dispose(): void } {
  let resolve!: (s: string) => void;
  const promise = new Promise<string>((r) => { resolve = r; });
  const on = (s: string) => () => resolve(s);
  const term = on('SIGTERM');
  const int = on('SIGINT');
  process.once('SIGTERM', term);
  process.once('SIGINT', int);
  return { promise, dispose: () => { process.off('SIGTERM', term); process.off('SIGINT', int); } };
}

/**
 * A proxy may be busy for minutes (a source rewritten faster than it is
 * read, a storm of changes), so it compacts once memory has grown 24 MB,
 * busy or not, and spends at most 2% of its CPU time doing so. The price: a
 * compaction delays a sync by its pause (at 10,000 Services about 0.3 s of
 * CPU, one every 15-20 s under 100 EndpointSlice changes a second).
 */
const proxyReducer: ReducerOptions = { intervalMs: 2000, slackBytes: 24 * 1024 * 1024, minGapMs: 2000, cpuShare: 0.02, busyAbove: 1 };

/** Runs until stopped; returns the exit code. */
export async function runProxy(config: ProxyConfig, log: Logger, hooks: RunHooks = {}): Promise<number> {
  const sig = hooks.stopSignal ? undefined : signals();
  const stopSignal = hooks.stopSignal ?? sig!.promise;
  const exec = hooks.exec ?? hostExec;
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => log.warn({ err }, 'shutdown step failed'));
    sig?.dispose();
  };
  try {
    log.info({ mode: config.mode, node: config.nodeName, source: config.sourceFile ?? 'kube', syncPeriodMs: config.syncPeriodMs, minSyncPeriodMs: config.minSyncPeriodMs }, 'kproxy starting');

    const health = new ProxierHealth({ healthTimeoutMs: 2 * config.syncPeriodMs });
    const mode = modeOf(config.mode);
    requireTools(mode.name);
    // A kernel that cannot run the mode stops start-up with one message (IPVS on a kernel without it).
    const unsupported = await mode.unsupported?.(exec);
    if (unsupported) throw new KproxyError('KPROXY_KERNEL_MISSING', unsupported);
    await mode.checkStart?.({ settings: config.modeSettings, exec, masqueradeBit: config.masqueradeBit });
    const metrics = new ProxyMetrics(mode);
    const servers: HttpHandle[] = [];
    // A successor started beside this kproxy (a rolling update that surges,
    // as the userspace mode's does, also when a node moves into that mode)
    // binds the same probe and metrics ports while this one stops.
    const listen = { reusePort: true };
    if (config.healthzBindAddress) {
      const a = config.healthzBindAddress;
      servers.push(await startHealthServer(health, a.port, a.host, log.child({ component: 'healthz' }), listen));
    }
    if (config.metricsBindAddress) {
      const a = config.metricsBindAddress;
      servers.push(await startMetricsServer(metrics, health, a.port, a.host, log, listen));
    }
    let serversClosed: Promise<void> | undefined;
    const closeServers = (): Promise<void> => (serversClosed ??= Promise.all(servers.map((s) => s.close())).then(() => undefined));
    closers.push(closeServers);
    for (const s of servers) log.info({ address: `${s.host}:${s.port}` }, 'listening');

    // Wait for the initial list; a stop request meanwhile ends start-up cleanly.
    let stopping = false;
    const abort = stopSignal.then((s) => {
      stopping = true;
      throw new Error(`stopped by ${s} during start-up`);
    });
    abort.catch(() => undefined);
    // With the API server as source, malformed Services and EndpointSlices
    // also get a Warning Event, for `kubectl describe`.
    // The kubeconfig is read once, for both.
    const kubeConfig = config.sourceFile === undefined ? loadKubeConfig(config.kubeconfig) : undefined;
    const events = kubeConfig
      ? new KubeEventRecorder({ kubeConfig, nodeName: config.nodeName }, log.child({ component: 'events' }))
      : undefined;
    if (events) closers.push(() => events.close());
    let loaded: LoadedSource;
    try {
      const onInvalid = (invalid: InvalidObject): void => {
        metrics.objectRefused(invalid.action ?? 'skip');
        events?.record(invalid);
      };
      loaded = await loadSource(config, log, { watch: true, checkTools: true, abort, onInvalid, kubeConfig });
    } catch (err) {
      if (stopping) {
        log.info('stopped before the first sync; rules left as they were');
        await closeAll();
        return 0;
      }
      throw err;
    }
    closers.push(() => loaded.source.stop());
    health.syncNode(loaded.node);

    const opts = modeOptions(config, loaded.families, loaded.nodeIPs, exec, log);
    log.info({ families: opts.families, nodeIPs: loaded.nodeIPs, nodePortAddresses: opts.nodePortAddresses }, 'initial list complete');
    const backend = mode.create(opts, log.child({ component: config.mode }));
    backend.registerMetrics?.(metrics.registry);
    closers.push(async () => { await backend.close?.(); });
    // A mode that keeps serving while it stops (a forwarder handing over to
    // its successor) lets the successor's probes and scrapes reach the
    // successor: the servers close first.
    if (backend.close) closers.push(closeServers);
    // Another mode's rules (a node switched from iptables to nftables, or back)
    // are removed only once this mode's first sync is in the kernel, so the
    // node is never without rules in between.
    // In a rolling update that surges, an old kproxy of another mode runs
    // beside this one until this one is ready, and may write its rules back
    // once more: they are removed a second time two sync periods later.
    let othersRemoved: Promise<void> | undefined;
    let removeAgain: NodeJS.Timeout | undefined;
    closers.push(async () => { clearTimeout(removeAgain); await othersRemoved; });
    const removeOthers = async (): Promise<void> => {
      const checked: string[] = [];
      for (const other of otherModes(config.mode)) {
        // Nothing of a mode this kernel cannot run can be here.
        if (await other.unsupported?.(exec).catch(() => undefined)) continue;
        await other.cleanup(opts, log).catch((err: unknown) => log.warn({ err, mode: other.name }, 'could not remove another mode\'s rules'));
        checked.push(other.name);
      }
      log.info({ modes: checked }, 'other modes\' rules removed, if any were left');
    };
    const removeOtherModes: SyncListener = {
      onSynced: () => {
        if (othersRemoved !== undefined) return;
        othersRemoved = removeOthers();
        removeAgain = setTimeout(() => { othersRemoved = othersRemoved!.then(removeOthers); }, 2 * config.syncPeriodMs);
        removeAgain.unref();
      },
    };

    // Pending-change gauges count distinct objects changed since the last snapshot.
    const pendingServices = new Set<string>();
    const pendingSlices = new Set<string>();
    const tracker = loaded.tracker;
    const counted: ServiceTracker = {
      apply: (e) => tracker.apply(e),
      pending: () => tracker.pending(),
      synced: () => tracker.synced(),
      requestFull: () => tracker.requestFull(),
      snapshot: () => {
        pendingServices.clear();
        pendingSlices.clear();
        metrics.setPending(0, 0);
        return tracker.snapshot();
      },
    };

    const hcHosts = healthCheckHosts(config, loaded.nodeIPs);
    if (hcHosts?.length === 0) log.warn({ nodePortAddresses: config.nodePortAddresses }, 'no local address within --nodeport-addresses: no healthCheckNodePort server can listen');
    const hc = new HealthCheckNodePorts({ hosts: hcHosts, proxyHealthy: () => health.status().healthy, ...listen }, log.child({ component: 'healthcheck' }));
    closers.push(() => hc.close());
    const runner = new Runner(
      { minSyncPeriodMs: config.minSyncPeriodMs, syncPeriodMs: config.syncPeriodMs },
      {
        tracker: counted, backend, log: log.child({ component: 'runner' }),
        afterSync: (changes) => clearStaleUdp(changes, exec, log.child({ component: 'conntrack' })),
        // A Service the node serves with a fallback gets a Warning Event too (API server source).
        onFallback: (warnings, state) => {
          for (const w of warnings) {
            const sp = state.services.get(w.key);
            if (!sp) continue;
            metrics.objectRefused('fallback');
            events?.record({ kind: 'Service', object: { metadata: { namespace: sp.namespace, name: sp.serviceName } }, problems: [`port ${sp.portName || sp.port}: ${w.reason}`], action: 'fallback' });
          }
        },
        listeners: [health, metrics, hc, removeOtherModes],
      },
    );
    closers.push(() => runner.stop());

    let warnedNodeIPs = false;
    loaded.onEvent = (e) => {
      if (e.kind === 'Service' || e.kind === 'EndpointSlice') {
        metrics.changeSeen(e.kind);
        const id = `${e.object.metadata?.namespace}/${e.object.metadata?.name}`;
        (e.kind === 'Service' ? pendingServices : pendingSlices).add(id);
        metrics.setPending(pendingServices.size, pendingSlices.size);
      } else if (e.kind === 'Node' && e.object.metadata?.name === config.nodeName) {
        health.syncNode(e.type === 'delete' ? undefined : e.object);
        // Families and "primary" NodePort addresses are fixed at start-up.
        const ips = e.type === 'delete' ? [] : nodeAddresses(e.object);
        if (ips.join(',') !== loaded.nodeIPs.join(',') && !warnedNodeIPs) {
          warnedNodeIPs = true;
          log.warn({ was: loaded.nodeIPs, now: ips }, 'this node\'s addresses changed; restart kproxy to use them for IP families and --nodeport-addresses primary');
        }
      }
      runner.request();
    };

    const first = await runner.start();
    // The initial list and the first full sync leave most of their garbage on
    // old pages, and so does every later run of changes: compact now, and
    // again whenever memory has grown well past its live size.
    const stopReducer = startMemoryReducer(log.child({ component: 'memory' }), proxyReducer);
    closers.push(async () => stopReducer());
    if (first.ok) log.info({ ms: first.finishedAt - first.startedAt, services: first.state.services.size }, 'first sync done');
    else log.error({ err: first.result.error }, 'first sync failed; retrying');

    const s = await stopSignal;
    log.info({ signal: s }, 'stopping; rules stay in place');
    await closeAll();
    return 0;
  } catch (err) {
    await closeAll();
    throw err;
  }
}
