// Records the events a Source emits and rebuilds the object set from them,
// so a test can compare "what the node believes" with what the API server holds.
import type { SourceEvent } from '../../proxy/source/source.ts';

type ObjectKind = 'Service' | 'EndpointSlice' | 'Node';

interface Meta {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

export function objectKey(obj: Meta): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}

export class SourceRecorder {
  readonly events: SourceEvent[] = [];
  readonly objects = new Map<ObjectKind, Map<string, Meta>>([
    ['Service', new Map()], ['EndpointSlice', new Map()], ['Node', new Map()],
  ]);

  /** Pass this to Source.start(). */
  readonly emit = (event: SourceEvent): void => {
    this.events.push(event);
    if (event.kind === 'Synced') return;
    const objects = this.objects.get(event.kind)!;
    if (event.type === 'upsert') objects.set(objectKey(event.object), event.object);
    else objects.delete(objectKey(event.object));
  };

  /** "namespace/name@resourceVersion" of every object of a kind, sorted. */
  snapshot(kind: ObjectKind): string[] {
    return [...this.objects.get(kind)!.values()]
      .map((o) => `${objectKey(o)}@${o.metadata?.resourceVersion}`)
      .sort();
  }

  /** Events since index `from` as compact strings: "upsert Service ns/a". */
  describe(from = 0): string[] {
    return this.events.slice(from).map((e) =>
      e.kind === 'Synced' ? 'Synced' : `${e.type} ${e.kind} ${objectKey(e.object)}`);
  }

  deletions(from = 0): string[] {
    return this.describe(from).filter((d) => d.startsWith('delete '));
  }
}

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`. */
export async function eventually(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
