// The userspace mode's own syntax, for dump, diff and explain: one line per
// Service address kproxy makes local and one per listener (address:port →
// endpoints, algorithm). Names are data: a Service port's name is printed
// quoted, with anything but printable ASCII escaped.
import { hostPort } from '../../lib/net.ts';
import type { LiveListener } from './status.ts';
import type { ListenerSpec, Route } from './table.ts';

/** A name as printable ASCII, quoted: never text that could pass for a line of its own. */
export function quoted(name: string): string {
  const inner = name.length > 300 ? `${name.slice(0, 300)}...` : name;
  return `"${inner.replace(/[^\x20-\x7e]|["\\]/g, (c) => (c === '"' || c === '\\' ? `\\${c}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`))}"`;
}

export function addressLine(ip: string): string {
  return `address ${ip}`;
}

function where(l: ListenerSpec): string {
  // Shown when the node's addresses are not known (dump and explain read no kernel).
  return l.ip === '0.0.0.0' || l.ip === '::' ? `*:${l.port}` : hostPort(l.ip, l.port);
}

function routeText(r: Route): string {
  return r.endpoints.length === 0 ? `none (${r.whenEmpty})` : r.endpoints.map((e) => hostPort(e.ip, e.port)).join(' ');
}

/** `listen TCP 10.96.0.10:80 "shop/web:http" rr → 10.244.1.11:8080 10.244.2.12:8080`, with affinity, source ranges and the cluster route when set. */
export function listenerLine(l: ListenerSpec): string {
  let line = `listen ${l.protocol} ${where(l)} ${quoted(l.service)} ${l.algorithm}`;
  if (l.affinitySeconds > 0) line += ` affinity ${l.affinitySeconds}s`;
  if (l.sourceRanges.length > 0) line += ` sources ${l.sourceRanges.join(',')}`;
  line += ` -> ${routeText(l.remote)}`;
  if (l.fromCluster !== undefined) line += ` | from cluster -> ${routeText(l.fromCluster)}`;
  return line;
}

/** Lines sorted as the listing sorts them: addresses, then listeners, each in text order. */
export function sortedLines(addresses: Iterable<string>, listeners: Iterable<ListenerSpec>): string[] {
  return [...[...addresses].map(addressLine).sort(), ...[...listeners].map(listenerLine).sort()];
}

/** What the running kproxy says of one service port's listeners, for explain. */
export function liveLines(listeners: readonly LiveListener[]): string[] {
  const out: string[] = [];
  for (const { spec, failed, report } of listeners) {
    const state = failed !== undefined ? `not listening: ${failed}` : report?.accepting ? 'accepting' : 'not accepting';
    out.push(`${spec.protocol} ${hostPort(spec.ip, spec.port)}: ${state}` +
      (report && report.connecting > 0 ? `, ${report.connecting} connecting` : '') +
      (report && report.held > 0 ? `, ${report.held} held without an answer (dropped)` : ''));
    const routes = new Set([...spec.remote.endpoints, ...(spec.fromCluster?.endpoints ?? [])].map((e) => hostPort(e.ip, e.port)));
    const reported = new Map((report?.endpoints ?? []).map((e) => [e.key, e]));
    for (const key of [...new Set([...routes, ...reported.keys()])].sort()) {
      const e = reported.get(key);
      const open = e?.open ?? 0;
      let why = '';
      if (!routes.has(key)) why = 'removed from the EndpointSlice: draining, no new connections';
      else if (e?.ejected) why = `skipped for ${Math.ceil(e.ejectedForMs / 1000)} s more: its connects failed (${e.lastError || 'unknown error'})`;
      else if (e && e.failures > 0) why = `${e.failures} failed connect${e.failures === 1 ? '' : 's'} in a row (${e.lastError})`;
      out.push(`  ${key.padEnd(24)} ${String(open).padStart(5)} open${why ? ` · ${why}` : ''}`);
    }
  }
  return out;
}
