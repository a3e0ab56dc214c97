// Starts the configured source (API server or YAML file), holds its events
// until the initial list is complete, then builds the tracker: the IP
// families the tracker needs depend on this node's addresses, which only
// the listed Node object knows.
import type { KubeConfig, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { ProxyConfig } from './config.ts';
import { KproxyError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { Family } from './model.ts';
import { ipFamilies } from './mode-options.ts';
import { modeOf } from '../modes/registry.ts';
import { FileSource } from './source/file.ts';
import { KubeSource } from './source/kube.ts';
import type { Source, SourceEvent } from './source/source.ts';
import { nodeAddresses, Tracker } from './tracker.ts';
import type { TrackerOptions } from './tracker-api.ts';

export { nodeAddresses };

export interface LoadedSource {
  readonly source: Source;
  readonly tracker: Tracker;
  readonly families: readonly Family[];
  readonly nodeIPs: readonly string[];
  readonly node: V1Node | undefined;
  /** Raw objects as last seen, when `keepObjects` was asked for (explain). */
  readonly services: ReadonlyMap<string, V1Service>;
  readonly slices: ReadonlyMap<string, V1EndpointSlice>;
  /** Called for every event after the initial list (set by the caller). */
  onEvent: ((event: SourceEvent) => void) | undefined;
}

export interface LoadOptions {
  readonly watch: boolean;
  /** Whether families may depend on installed tools (false for dump/explain). */
  readonly checkTools: boolean;
  readonly keepObjects?: boolean;
  /** Rejects the wait for the initial list (SIGTERM during start-up). */
  readonly abort?: Promise<never>;
  /** Told of each malformed Service or EndpointSlice the tracker skips (Events). */
  readonly onInvalid?: TrackerOptions['onInvalid'];
  /** The kubeconfig, when the caller has loaded it already. */
  readonly kubeConfig?: KubeConfig;
}

function key(o: { metadata?: { namespace?: string; name?: string } }): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

export async function loadSource(config: ProxyConfig, log: Logger, opts: LoadOptions): Promise<LoadedSource> {
  const source: Source = config.sourceFile !== undefined
    ? new FileSource(config.sourceFile, log, { watch: opts.watch })
    : new KubeSource({ kubeconfig: config.kubeconfig, kubeConfig: opts.kubeConfig, nodeName: config.nodeName }, log);
  const held: SourceEvent[] = [];
  const services = new Map<string, V1Service>();
  const slices = new Map<string, V1EndpointSlice>();
  let node: V1Node | undefined;
  let tracker: Tracker | undefined;
  const loaded = { onEvent: undefined as ((event: SourceEvent) => void) | undefined };

  const emit = (e: SourceEvent): void => {
    if (e.kind === 'Node' && e.object.metadata?.name === config.nodeName) node = e.type === 'delete' ? undefined : e.object;
    if (opts.keepObjects) {
      if (e.kind === 'Service') e.type === 'delete' ? services.delete(key(e.object)) : services.set(key(e.object), e.object);
      if (e.kind === 'EndpointSlice') e.type === 'delete' ? slices.delete(key(e.object)) : slices.set(key(e.object), e.object);
    }
    if (!tracker) {
      held.push(e);
      return;
    }
    tracker.apply(e);
    loaded.onEvent?.(e);
  };

  try {
    const started = source.start(emit);
    await (opts.abort ? Promise.race([started, opts.abort]) : started);
  } catch (err) {
    await source.stop().catch(() => undefined);
    if (err instanceof KproxyError) throw err;
    throw new KproxyError('KPROXY_SOURCE_FAILED', (err as Error).message, { cause: err });
  }
  const nodeIPs = nodeAddresses(node);
  if (!node) log.warn({ node: config.nodeName }, 'no Node object for this node: no node addresses, topology hints need its zone label');
  const serviceIPs = held.flatMap((e) => (e.kind === 'Service' ? e.object.spec?.clusterIPs ?? [] : []));
  const families = ipFamilies({ clusterCIDRs: config.clusterCIDRs, nodeIPs, serviceIPs, mode: config.mode, checkTools: opts.checkTools }, log);
  const unserved = modeOf(config.mode).differences?.unservedProtocols;
  tracker = new Tracker({
    nodeName: config.nodeName, families, onInvalid: opts.onInvalid, externalIPCIDRs: config.externalIPCIDRs,
    ...(unserved?.length ? { unservedProtocols: { mode: config.mode, protocols: unserved } } : {}),
  }, log.child({ component: 'tracker' }));
  for (const e of held) tracker.apply(e);
  // `emit` lives as long as the source: emptied, the list no longer keeps
  // the first version of every object alive once a newer one replaces it.
  held.length = 0;
  return Object.assign(loaded, { source, tracker, families, nodeIPs, node, services, slices });
}
