// `kproxy dns-cache`: wires config, node set-up, listeners, the resolver and
// the HTTP endpoints together; reloads on config file change or SIGHUP and
// keeps the old config (and always the cache) when a new one is bad.
import { unwatchFile, watchFile } from 'node:fs';
import { hostExec, type Exec } from '../lib/exec.ts';
import { logger, setLogLevel, type Logger } from '../lib/log.ts';
import { ConfigError, type DnsCacheConfig, type ListenAddress, type UdpIo } from './config.ts';
import { parseArgs, resolveConfig, USAGE, type DnsCacheArgs } from './flags.ts';
import { startHttp, type HttpEndpoints } from './http.ts';
import { listen } from './listeners.ts';
import { requestCompaction, startDnsMemoryReducer } from './memory.ts';
import { DnsMetrics } from './metrics.ts';
import { NodeSetup } from './node-setup.ts';
import { Resolver } from './resolver.ts';
import type { KubeZonesOptions } from './kube-zones.ts';
import { kubeSourceLabel } from './config.ts';

const RULE_CHECK_MS = 60_000;

export interface DnsCacheInstance {
  readonly resolver: Resolver;
  readonly metrics: DnsMetrics;
  /** Listen addresses as bound (port 0 resolved). */
  readonly bound: readonly ListenAddress[];
  /** The UDP socket kind serving (batched unless it fell back to dgram). */
  readonly udpIo: UdpIo;
  readonly http: HttpEndpoints;
  config(): DnsCacheConfig;
  /** Re-reads the config; false (old config kept) when it is invalid. */
  reload(): Promise<boolean>;
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  /** Runs ip/iptables for node set-up (tests pass a network namespace's). */
  readonly exec?: Exec;
  /** Watch the config file for changes (default true when there is one). */
  readonly watch?: boolean;
  /** For zones answered from an API server (tests shorten the list/watch retries). */
  readonly kube?: KubeZonesOptions;
}

function sameListen(a: DnsCacheConfig, b: DnsCacheConfig): boolean {
  const f = (c: DnsCacheConfig): string => c.listen.map((l) => `${l.host}:${l.port}`).join(',');
  return f(a) === f(b) && a.udpSockets === b.udpSockets && a.udpIo === b.udpIo && a.healthAddr === b.healthAddr && a.metricsAddr === b.metricsAddr;
}

/** Starts serving with a validated config. Throws on bind or set-up failure. */
export async function startDnsCache(args: DnsCacheArgs, opts: StartOptions = {}): Promise<DnsCacheInstance> {
  const log = opts.log ?? logger().child({ component: 'dns-cache' });
  let config = resolveConfig(args);
  let resolver: Resolver | undefined;
  const metrics = new DnsMetrics(
    {
      zones: () => resolver?.cache.zoneCaches() ?? [],
      kubeZones: () => (resolver?.kube.all ?? []).map((z) => ({ name: z.name, source: z.source, answering: z.answering, objects: z.names.size })),
    },
    () => resolver?.cache.evictions ?? 0,
  );
  resolver = new Resolver(log, metrics, { kube: { listed: requestCompaction, ...opts.kube } });
  try {
    await resolver.apply(config);
  } catch (e) {
    resolver.close();
    throw e;
  }
  const node = new NodeSetup(opts.exec ?? hostExec, {
    interfaceName: config.interfaceName, addresses: config.listen,
    setupInterface: config.setupInterface, setupIptables: config.setupIptables,
  }, log);
  const teardown = async (): Promise<void> => {
    if (config.skipTeardown) log.info('leaving node set-up in place (--skip-teardown)');
    else await node.teardown();
  };
  let listeners: Awaited<ReturnType<typeof listen>> | undefined;
  let http: HttpEndpoints | undefined;
  try {
    await node.setup();
    listeners = await listen(config.listen, {
      udpSockets: config.udpSockets, udpIo: config.udpIo, tcp: config.tcp,
      tcpEvents: { refused: (why) => metrics.tcpRefusedConnection(why), reclaimed: () => metrics.tcpReclaimedConnection() },
    }, resolver, log);
    const r = resolver;
    http = await startHttp(config.healthAddr, config.metricsAddr, () => (r.zones.length ? undefined : 'no zones configured'), metrics.registry);
  } catch (e) {
    await listeners?.close();
    resolver.close();
    await teardown();
    throw e;
  }
  const ruleTimer = config.setupIptables
    ? setInterval(() => {
      node.ensureRules().then(
        (n) => { if (n) log.warn({ added: n }, 'NOTRACK/ACCEPT rules were missing and have been put back'); },
        (e: unknown) => log.warn({ err: (e as Error).message }, 'checking NOTRACK rules failed'),
      );
    }, RULE_CHECK_MS)
    : undefined;
  ruleTimer?.unref();

  const res = resolver;
  const l = listeners;
  const h = http;
  // One reload at a time (a file change and a SIGHUP may come together).
  let reloading: Promise<boolean> = Promise.resolve(true);
  const reload = (): Promise<boolean> => {
    reloading = reloading.then(reloadNow, reloadNow);
    return reloading;
  };
  const reloadNow = async (): Promise<boolean> => {
    let next: DnsCacheConfig;
    try {
      next = resolveConfig(args);
      await res.apply(next);
    } catch (e) {
      metrics.reloadFailed.inc();
      const problems = e instanceof ConfigError ? e.problems : [(e as Error).message];
      log.error({ problems }, `config reload refused, the previous config stays in force: ${problems.join('; ')}`);
      return false;
    }
    if (!sameListen(config, next)) log.warn('listen, health, metrics, udp_sockets and udp_io changes take effect on restart only');
    l.setTcpLimits(next.tcp);
    config = next;
    log.info({ zones: next.zones.map((z) => z.suffix), cached: res.cache.size }, 'config reloaded; cache kept');
    return true;
  };
  const watching = (opts.watch ?? true) && args.configPath !== undefined;
  if (watching && args.configPath) {
    watchFile(args.configPath, { interval: 500, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) void reload();
    });
  }
  log.info({ listen: listeners.bound, udpIo: listeners.udpIo, zones: config.zones.map((z) => `${z.suffix}=${[...(z.kubernetes ? [kubeSourceLabel(z.kubernetes)] : []), ...z.upstreams.map((u) => `${u.host}:${u.port}`)].join(',')}`), health: http.health, metrics: http.metrics }, 'dns-cache serving');
  let stopped = false;
  return {
    resolver: res, metrics, bound: l.bound, udpIo: l.udpIo, http: h,
    config: () => config,
    reload,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (ruleTimer) clearInterval(ruleTimer);
      if (watching && args.configPath) unwatchFile(args.configPath);
      await l.close();
      await h.close();
      await res.kube.stop();
      res.close();
      await teardown();
    },
  };
}

/** Entry point for `kproxy dns-cache ARGS`: runs until SIGTERM/SIGINT; resolves with the exit code. */
export async function runDnsCache(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let args: DnsCacheArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (args.logLevel) setLogLevel(args.logLevel);
  const log = logger().child({ component: 'dns-cache' });
  let instance: DnsCacheInstance;
  try {
    instance = await startDnsCache(args, { log });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      return 2;
    }
    log.error({ err: (e as Error).message }, 'dns-cache failed to start');
    return 1;
  }
  const stopReducer = startDnsMemoryReducer(log);
  return new Promise<number>((resolve) => {
    const onHup = (): void => { void instance.reload(); };
    const onStop = (signal: string): void => {
      log.info({ signal }, 'stopping');
      stopReducer();
      process.off('SIGHUP', onHup);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      instance.stop().then(() => resolve(0), (e: unknown) => {
        log.error({ err: (e as Error).message }, 'stopping failed');
        resolve(1);
      });
    };
    const onTerm = (): void => onStop('SIGTERM');
    const onInt = (): void => onStop('SIGINT');
    process.on('SIGHUP', onHup);
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
}
