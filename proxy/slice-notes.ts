// Why a Service's EndpointSlices, or one of its ports, give no endpoints:
// the reasons the tracker logs once and `explain` prints, so that nothing
// is skipped without a word.
import type { V1EndpointSlice } from '@kubernetes/client-node';
import type { Family, Protocol } from './model.ts';
import { portKey } from './endpoints.ts';

/** Slices of a Service that contribute no endpoints at all on this node, with the reason. */
export function unusedSlices(slices: readonly V1EndpointSlice[], families: readonly Family[]): string[] {
  const out: string[] = [];
  for (const s of slices) {
    const name = s.metadata?.name ?? '(unnamed)';
    if (s.addressType === 'FQDN') out.push(`EndpointSlice ${name} lists FQDN addresses: no proxy forwards to names`);
    else if (s.addressType === 'IPv6' && !families.includes(6)) out.push(`EndpointSlice ${name} lists IPv6 endpoints: this node programs IPv4 only`);
    else if (s.addressType === 'IPv4' && !families.includes(4)) out.push(`EndpointSlice ${name} lists IPv4 endpoints: this node programs IPv6 only`);
  }
  return out;
}

/**
 * Why a Service port gets no endpoints from slices that exist: none of
 * their ports has the Service port's name and protocol (a targetPort name
 * that no endpoint port matches). Undefined when a slice port matches or
 * there is no slice of the family at all.
 */
export function unmatchedPort(slices: readonly V1EndpointSlice[], family: Family, portName: string, protocol: Protocol): string | undefined {
  const addressType = family === 4 ? 'IPv4' : 'IPv6';
  const ofFamily = slices.filter((s) => s.addressType === addressType);
  if (ofFamily.length === 0) return undefined;
  const want = portKey(portName, protocol);
  const have = new Set<string>();
  for (const s of ofFamily) for (const p of s.ports ?? []) if (p.port) have.add(portKey(p.name ?? '', p.protocol ?? 'TCP'));
  if (have.has(want)) return undefined;
  const list = [...have].sort().map((k) => (k.startsWith('/') ? `(unnamed)${k}` : k)).join(', ');
  return `no EndpointSlice port is named ${JSON.stringify(portName)} with protocol ${protocol} (the slices have: ${list || 'no numbered port'})`;
}
