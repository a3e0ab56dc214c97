// One sync of a backend: prepare, plan, apply, timed in one place for every
// mode. Used by the runner, by the commands that build rules (diff) and by
// tests and benchmarks, so they all drive a mode the same way.
import type { Changes, NodeState } from '../proxy/model.ts';
import type { Backend, Damage } from './backend.ts';
import type { RefusedPort } from './values.ts';

export interface SyncResult {
  readonly ok: boolean;
  /** Whether the sync was a full one (a failure makes the next one full). */
  readonly full: boolean;
  /** Milliseconds spent planning (rendering) in kproxy. */
  readonly renderMs: number;
  /** Milliseconds spent preparing and applying: kernel tools, or the forwarder's update. */
  readonly applyMs: number;
  /** Units of work sent (Plan.size). */
  readonly size: number;
  /** Objects the mode holds per table after the sync (Backend.owned()). */
  readonly owned: Readonly<Record<string, number>>;
  /** Service ports the plan left out (Plan.refused). */
  readonly refused?: readonly RefusedPort[];
  /** What the sync restored of changes someone else made (Plan.repairs; empty when it failed). */
  readonly repairs?: readonly Damage[];
  readonly error?: Error;
}

export async function syncBackend(backend: Backend, state: NodeState, changes: Changes): Promise<SyncResult> {
  const t0 = performance.now();
  let renderMs = 0;
  let full = changes.full;
  let size = 0;
  let repairs: readonly Damage[] = [];
  try {
    await backend.prepare?.(changes);
    const r0 = performance.now();
    const plan = backend.plan(state, changes);
    renderMs = performance.now() - r0;
    full = plan.full;
    size = plan.size;
    await backend.apply(plan);
    repairs = plan.repairs ?? [];
    return {
      ok: true, full, renderMs, applyMs: performance.now() - t0 - renderMs, size, owned: backend.owned(), repairs,
      ...(plan.refused?.length ? { refused: plan.refused } : {}),
    };
  } catch (e) {
    const error = e instanceof Error ? e : new Error(String(e));
    return { ok: false, full, renderMs, applyMs: performance.now() - t0 - renderMs, size, owned: backend.owned(), repairs, error };
  }
}
