// Who owns an address:port:protocol or a NodePort when several Services
// claim it. Without this, one Service silently takes another's traffic:
// through the API server anyone allowed to create a Service can claim any
// address as an externalIP or a load-balancer IP (CVE-2020-8554). The
// older Service (creationTimestamp, then namespace/name) keeps the claim;
// the others lose it for that port only, and are told why.
import type { V1Service } from '@kubernetes/client-node';
import type { Family, Protocol } from './model.ts';

/** The order in which Services win claims: older first, then by namespace/name. */
export interface ClaimRank {
  /** creationTimestamp in ms; a Service without one ranks after those with one. */
  readonly created: number;
  readonly name: string;
}

export function rankOf(svc: V1Service, name: string): ClaimRank {
  const ts = svc.metadata?.creationTimestamp;
  const created = ts ? new Date(ts as unknown as string).getTime() : NaN;
  return { created: Number.isNaN(created) ? Infinity : created, name };
}

function before(a: ClaimRank, b: ClaimRank): boolean {
  return a.created !== b.created ? a.created < b.created : a.name < b.name;
}

/** The claim on one service address (cluster IP, externalIP or load-balancer IP). */
export function addressClaim(family: Family, ip: string, protocol: Protocol, port: number): string {
  return `${family}/${ip}/${protocol}/${port}`;
}

/** The claim on a NodePort: one per protocol, whatever the family. */
export function nodePortClaim(protocol: Protocol, nodePort: number): string {
  return `nodePort/${protocol}/${nodePort}`;
}

export class ClaimBook {
  readonly #claimsOf = new Map<string, readonly string[]>();
  readonly #rankOf = new Map<string, ClaimRank>();
  /** Claim → its claimants, holder first. */
  readonly #claimants = new Map<string, string[]>();

  /**
   * Replaces the claims of `service` (none: it is gone). Returns the other
   * Services whose hold on a claim it shares may have changed: they must
   * be computed again.
   */
  set(service: string, rank: ClaimRank | undefined, claims: readonly string[]): Set<string> {
    const affected = new Set<string>();
    const old = this.#claimsOf.get(service) ?? [];
    const oldRank = this.#rankOf.get(service);
    const next = new Set(claims);
    const rankChanged = rank !== undefined && oldRank !== undefined && (rank.created !== oldRank.created || rank.name !== oldRank.name);
    for (const id of old) {
      if (next.has(id) && !rankChanged) continue;
      const list = this.#claimants.get(id)!;
      list.splice(list.indexOf(service), 1);
      if (list.length === 0) this.#claimants.delete(id);
      for (const other of list) affected.add(other);
    }
    if (rank === undefined || claims.length === 0) {
      this.#claimsOf.delete(service);
      this.#rankOf.delete(service);
      return affected;
    }
    this.#rankOf.set(service, rank);
    for (const id of next) {
      if (old.includes(id) && !rankChanged) continue;
      let list = this.#claimants.get(id);
      if (!list) this.#claimants.set(id, (list = []));
      let at = 0;
      while (at < list.length && before(this.#rankOf.get(list[at])!, rank)) at++;
      list.splice(at, 0, service);
      for (const other of list) if (other !== service) affected.add(other);
    }
    this.#claimsOf.set(service, [...next]);
    return affected;
  }

  /** The Service holding `claim`, when `service` is not it. */
  heldBy(service: string, claim: string): string | undefined {
    const holder = this.#claimants.get(claim)?.[0];
    return holder !== undefined && holder !== service ? holder : undefined;
  }
}
