// `kproxy explain IP:PORT[/PROTO]` or `kproxy explain NAMESPACE/NAME`:
// which Service port a destination is, which endpoints each traffic policy
// uses and why the others are left out, and the kernel objects the mode
// would hold for that port (asked of the mode, which alone knows its
// syntax). Reads the same source as dump; touches no kernel.
import { hostPort } from '../../lib/net.ts';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { isIP } from 'node:net';
import type { Backend } from '../../modes/backend.ts';
import { hostExec, type Exec } from '../../lib/exec.ts';
import { modeOf } from '../../modes/registry.ts';
import type { ProxyConfig } from '../config.ts';
import { collectEndpoints, portKey, serviceNameLabel, type SliceEndpoint } from '../endpoints.ts';
import { KproxyError } from '../../lib/errors.ts';
import { loadSource, type LoadedSource } from '../load-source.ts';
import type { Logger } from '../../lib/log.ts';
import type { Endpoint, NodeState, Protocol, ServicePortState } from '../model.ts';
import { modeOptions } from '../mode-options.ts';
import { skipReason, usesClusterEndpoints, usesLocalEndpoints } from '../service-ports.ts';
import { servicePreference, zoneLabel } from '../topology.ts';
import { unmatchedPort, unusedSlices } from '../slice-notes.ts';
import type { InvalidObject } from '../tracker-api.ts';
import type { Out } from './output.ts';

export interface Destination {
  readonly ip: string;
  readonly port: number;
  readonly protocol?: Protocol;
}

/** Parses "IP:PORT[/PROTO]" ("[v6]:PORT" for IPv6); undefined when it is not one (then it is a Service name). */
export function parseDestination(text: string): Destination | string | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})(?:\/([A-Za-z]+))?$/.exec(text);
  if (!m) return undefined;
  const ip = m[1] ?? m[2];
  if (isIP(ip) === 0) return `"${ip}" is not an IP address`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return `port ${port} is not in 1-65535`;
  const proto = m[4]?.toUpperCase();
  if (proto !== undefined && proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') return `protocol "${m[4]}" is not TCP, UDP or SCTP`;
  return { ip, port, protocol: proto as Protocol | undefined };
}

interface Match {
  readonly sp: ServicePortState;
  readonly how: string;
}

export function matchDestination(state: NodeState, d: Destination): Match[] {
  const out: Match[] = [];
  for (const sp of state.services.values()) {
    if (d.protocol && sp.protocol !== d.protocol) continue;
    if (d.port === sp.port) {
      if (sp.clusterIP === d.ip) out.push({ sp, how: 'clusterIP' });
      else if (sp.externalIPs.includes(d.ip)) out.push({ sp, how: 'externalIP' });
      else if (sp.loadBalancerIPs.includes(d.ip)) out.push({ sp, how: 'load-balancer IP' });
    }
    if (sp.nodePort !== 0 && d.port === sp.nodePort && (state.nodeIPs.includes(d.ip) || isLoopback(d.ip)) && isIP(d.ip) === sp.family) {
      out.push({ sp, how: 'nodePort on this node' });
    }
  }
  return sortPorts(out);
}

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

function sortPorts<T extends { sp: ServicePortState }>(list: T[]): T[] {
  return list.sort((a, b) => (a.sp.key < b.sp.key ? -1 : a.sp.key > b.sp.key ? 1 : 0));
}

function epText(e: { ip: string; port: number }): string {
  return hostPort(e.ip, e.port);
}

function same(a: Endpoint, b: Endpoint): boolean {
  return a.ip === b.ip && a.port === b.port;
}

interface Context {
  readonly loaded: LoadedSource;
  readonly state: NodeState;
  readonly backend: Backend;
  readonly nodeName: string;
  /** What the tracker skipped or refused, by "namespace/name" of the object. */
  readonly reports: ReadonlyMap<string, readonly InvalidObject[]>;
}

function slicesOf(loaded: LoadedSource, namespace: string, name: string): V1EndpointSlice[] {
  return [...loaded.slices.values()].filter((s) => s.metadata?.namespace === namespace && s.metadata?.labels?.[serviceNameLabel] === name);
}

/** ip → nodeName from the slices, to show where each endpoint runs. */
function nodeOf(slices: readonly V1EndpointSlice[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const s of slices) for (const e of s.endpoints ?? []) if (e.nodeName) for (const a of e.addresses) m.set(a, e.nodeName);
  return m;
}

function describePort(ctx: Context, sp: ServicePortState, how: string | undefined): string[] {
  const { loaded, nodeName } = ctx;
  const svc = loaded.services.get(`${sp.namespace}/${sp.serviceName}`);
  const slices = slicesOf(loaded, sp.namespace, sp.serviceName);
  const nodes = nodeOf(slices);
  const out: string[] = [];
  const type = svc?.spec?.type ?? 'ClusterIP';
  out.push(`${sp.name} ${sp.protocol} IPv${sp.family} (${type})${how ? ` — matched as ${how}` : ''}`);
  const addrs = [`clusterIP ${epText({ ip: sp.clusterIP, port: sp.port })}`];
  if (sp.nodePort) addrs.push(`nodePort ${sp.nodePort}`);
  if (sp.externalIPs.length) addrs.push(`externalIPs ${sp.externalIPs.join(', ')}`);
  if (sp.loadBalancerIPs.length) addrs.push(`load-balancer IPs ${sp.loadBalancerIPs.join(', ')}`);
  if (sp.loadBalancerSourceRanges.length) addrs.push(`source ranges ${sp.loadBalancerSourceRanges.join(', ')}`);
  out.push(`  ${addrs.join(' · ')}`);
  const pref = svc ? servicePreference(svc) : 'none';
  out.push(`  internalTrafficPolicy ${sp.internalPolicyLocal ? 'Local' : 'Cluster'} · externalTrafficPolicy ${sp.externalPolicyLocal ? 'Local' : 'Cluster'}` +
    (sp.healthCheckNodePort ? ` (healthCheckNodePort ${sp.healthCheckNodePort})` : '') +
    ` · affinity ${sp.affinityTimeoutSeconds ? `ClientIP ${sp.affinityTimeoutSeconds}s` : 'None'}` +
    ` · topology ${pref === 'none' ? 'none' : pref === 'zone' ? `same zone (${loaded.node?.metadata?.labels?.[zoneLabel] ?? 'node has no zone label'})` : 'same node'}`);

  // Every endpoint the slices list for this port, to say why unused ones are left out.
  const all: SliceEndpoint[] = collectEndpoints(slices, sp.family, nodeName).get(portKey(sp.portName, sp.protocol)) ?? [];
  const where = (e: Endpoint): string => {
    const n = nodes.get(e.ip);
    return e.isLocal ? `${n ?? nodeName} (this node)` : n ?? 'no node';
  };
  const state = (e: Endpoint): string => e.ready ? 'ready' : e.serving && e.terminating ? 'terminating, used as fallback: no endpoint is ready' : 'not ready';
  const section = (title: string, list: readonly Endpoint[], used: boolean, emptyWhy: string): void => {
    if (!used) {
      out.push(`  ${title}: not used by this port`);
      return;
    }
    out.push(`  ${title} (${list.length}):${list.length === 0 ? ` none — ${emptyWhy}` : ''}`);
    for (const e of list) out.push(`    ${epText(e).padEnd(24)} ${where(e).padEnd(22)} ${state(e)}`);
  };
  // Whatever kproxy left out of this Service, and why.
  const refused = (ctx.reports.get(`${sp.namespace}/${sp.serviceName}`) ?? []).filter((r) => r.kind === 'Service' && r.action === 'refuse');
  for (const r of refused) for (const p of r.problems) out.push(`  refused: ${p}`);
  for (const n of unusedSlices(slices, ctx.loaded.families)) out.push(`  not used: ${n}`);
  const unmatched = unmatchedPort(slices, sp.family, sp.portName, sp.protocol);
  if (unmatched) out.push(`  not used: ${unmatched}`);
  const usesCluster = usesClusterEndpoints(sp);
  const usesLocal = usesLocalEndpoints(sp);
  const noneWhy = slices.length === 0 ? 'no EndpointSlice for this Service' : all.length === 0 ? 'the EndpointSlices list no endpoint for this port' : 'no ready or serving-terminating endpoint';
  section('cluster-policy endpoints', sp.clusterEndpoints, usesCluster, noneWhy);
  section('local-policy endpoints', sp.localEndpoints, usesLocal,
    `traffic policy Local with no local endpoints: ${sp.externalPolicyLocal ? 'external traffic arriving at this node is dropped' : 'traffic from this node is dropped'}`);

  const unused = all.filter(({ ep }) => !sp.allReachableEndpoints.some((u) => same(u, ep)));
  if (unused.length > 0) {
    out.push(`  not used (${unused.length}):`);
    for (const { ep, ready } of unused) {
      let why: string;
      if (!ready && !(ep.serving && ep.terminating)) why = ep.terminating ? 'terminating and not serving' : 'not ready';
      else if (!ready) why = 'terminating: used only when no endpoint is ready';
      else if (!usesCluster && !ep.isLocal) why = 'on another node, and traffic policy Local uses only this node\'s endpoints';
      else if (pref !== 'none') why = 'topology-filtered: the hints route this node\'s traffic to other endpoints';
      else why = 'not selected';
      out.push(`    ${epText(ep).padEnd(24)} ${where(ep).padEnd(22)} ${why}`);
    }
  }
  if (sp.noEndpointVerdict === 'reject') {
    const how = sp.protocol === 'TCP' ? 'TCP reset' : 'ICMP port-unreachable';
    out.push(`  => no usable endpoints anywhere: connections are rejected at once (${how})${slices.length === 0 ? '; no EndpointSlice for this Service' : ''}`);
  } else if (usesLocal && sp.localEndpoints.length === 0) {
    out.push(usesCluster
      ? '  => traffic under the Local policy is dropped on this node (no local endpoint); traffic under the Cluster policy is load-balanced'
      : '  => traffic from this node is dropped (internalTrafficPolicy Local, no local endpoint)');
  }
  const { backend } = ctx;
  if (!backend.describeService) {
    out.push(`  ${backend.mode} rules: this mode cannot show one port's rules (see \`kproxy dump\`)`);
  } else {
    const rules = backend.describeService(ctx.state, sp.key);
    out.push(`  ${backend.mode} rules of this port (${rules.length} lines):`);
    for (const r of rules) out.push(`    ${r}`);
  }
  return out;
}

/** What the port looks like now, when the mode can say (IPVS: connections per real server; a forwarder: the running kproxy's view). */
async function liveLines(ctx: Context, sp: ServicePortState): Promise<string[]> {
  const { backend } = ctx;
  if (!backend.describeLive) return [];
  try {
    return (await backend.describeLive(ctx.state, sp.key)).map((l) => `  ${l}`);
  } catch (err) {
    return [`  ${backend.mode} live state: not readable here (${(err as Error).message.split('\n')[0]})`];
  }
}

export async function explainCommand(config: ProxyConfig, log: Logger, out: Out, exec: Exec = hostExec): Promise<number> {
  const target = config.target!;
  const dest = parseDestination(target);
  if (typeof dest === 'string') throw new KproxyError('KPROXY_BAD_CONFIG', `explain ${target}: ${dest}`);
  const reports = new Map<string, InvalidObject[]>();
  const onInvalid = (r: InvalidObject): void => {
    const m = r.object.metadata;
    const key = `${m?.namespace}/${r.kind === 'EndpointSlice' ? m?.labels?.[serviceNameLabel] : m?.name}`;
    reports.set(key, [...(reports.get(key) ?? []), r]);
  };
  const loaded = await loadSource(config, log, { watch: false, checkTools: false, keepObjects: true, onInvalid });
  try {
    const state = loaded.tracker.snapshot().state;
    const backend = modeOf(config.mode).create(modeOptions(config, loaded.families, loaded.nodeIPs, exec, log), log);
    const ctx: Context = { loaded, state, backend, nodeName: config.nodeName, reports };
    const lines: string[] = [];
    if (dest) {
      const matches = matchDestination(state, dest);
      if (matches.length === 0) {
        throw new KproxyError('KPROXY_NOT_FOUND', `no Service port is reached at ${target} from node ${config.nodeName}: kproxy leaves such traffic alone`);
      }
      for (const m of matches) lines.push(...describePort(ctx, m.sp, m.how), ...(await liveLines(ctx, m.sp)), '');
    } else {
      const found = findService(loaded, target);
      const ports = sortPorts([...state.services.values()].filter((sp) => sp.namespace === found.namespace && sp.serviceName === found.name).map((sp) => ({ sp })));
      const skipped = (reports.get(`${found.namespace}/${found.name}`) ?? []).filter((r) => r.kind === 'Service' && r.action !== 'refuse');
      if (skipped.length > 0) {
        lines.push(`${found.namespace}/${found.name}: skipped by kproxy as malformed (the last valid version stays in force, if any):`);
        for (const p of skipped.flatMap((r) => r.problems)) lines.push(`  - ${p}`);
      } else if (ports.length === 0) {
        const refusals = (reports.get(`${found.namespace}/${found.name}`) ?? []).filter((r) => r.kind === 'Service' && r.action === 'refuse').flatMap((r) => r.problems);
        const why = skipReason(found.svc) ?? (refusals.length > 0 ? refusals.join('; ') : 'it has no port kproxy can proxy (or none of an IP family this node uses)');
        lines.push(`${found.namespace}/${found.name}: not proxied by kproxy: ${why}`);
      }
      for (const r of (reports.get(`${found.namespace}/${found.name}`) ?? []).filter((x) => x.kind === 'EndpointSlice')) {
        lines.push(`EndpointSlice ${r.object.metadata?.name ?? '(unnamed)'} of this Service skipped as malformed: ${r.problems.join('; ')}`);
      }
      for (const { sp } of ports) lines.push(...describePort(ctx, sp, undefined), ...(await liveLines(ctx, sp)), '');
    }
    await out(lines.join('\n'));
    return 0;
  } finally {
    await loaded.source.stop();
  }
}

function findService(loaded: LoadedSource, target: string): { namespace: string; name: string; svc: V1Service } {
  if (target.includes('/')) {
    const [namespace, name] = target.split('/', 2);
    const svc = loaded.services.get(`${namespace}/${name}`);
    if (!svc) throw new KproxyError('KPROXY_NOT_FOUND', `no Service ${namespace}/${name}`);
    return { namespace, name, svc };
  }
  const hits = [...loaded.services.values()].filter((s) => s.metadata?.name === target);
  if (hits.length === 0) throw new KproxyError('KPROXY_NOT_FOUND', `no Service named ${target} in any namespace (or give IP:PORT[/PROTO])`);
  if (hits.length > 1) {
    throw new KproxyError('KPROXY_NOT_FOUND', `Service name ${target} is ambiguous: ${hits.map((s) => `${s.metadata?.namespace}/${target}`).join(', ')}`);
  }
  return { namespace: hits[0].metadata!.namespace!, name: target, svc: hits[0] };
}
