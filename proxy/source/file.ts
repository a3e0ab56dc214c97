// A Source that reads Services, EndpointSlices and Nodes from a YAML file
// and, when asked to watch, re-reads it on change and emits only the
// difference. A file that fails to parse is reported and the previous
// content stays in force.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from '../../lib/log.ts';
import { parseObjects, type ParsedObjects } from '../objects.ts';
import type { Emit, Source, SourceEvent } from './source.ts';

export interface FileSourceOptions {
  /** Re-read the file when it changes (default true). */
  readonly watch?: boolean;
  /** Quiet time after the last change before re-reading, in ms (default 100). */
  readonly debounceMs?: number;
}

type Kind = 'Service' | 'EndpointSlice' | 'Node';
interface Held { kind: Kind; object: object; text: string }

function index(parsed: ParsedObjects): Map<string, Held> {
  const out = new Map<string, Held>();
  const add = (kind: Kind, list: { metadata?: { name?: string; namespace?: string } }[]): void => {
    list.forEach((object, i) => {
      const m = object.metadata;
      // Nameless objects still reach the tracker, which reports them.
      const id = `${kind}/${m?.namespace ?? ''}/${m?.name ?? `#${i}`}`;
      out.set(id, { kind, object, text: JSON.stringify(object) });
    });
  };
  add('Node', parsed.nodes);
  add('Service', parsed.services);
  add('EndpointSlice', parsed.slices);
  return out;
}

function event(kind: Kind, type: 'upsert' | 'delete', object: object): SourceEvent {
  return { kind, type, object } as SourceEvent;
}

export class FileSource implements Source {
  readonly #path: string;
  readonly #log: Logger;
  readonly #watch: boolean;
  readonly #debounceMs: number;
  #held = new Map<string, Held>();
  #lastText: string | undefined;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #emit: Emit | undefined;
  #reading: Promise<void> = Promise.resolve();

  constructor(path: string, log: Logger, opts: FileSourceOptions = {}) {
    this.#path = resolve(path);
    this.#log = log.child({ component: 'file-source', path: this.#path });
    this.#watch = opts.watch ?? true;
    this.#debounceMs = opts.debounceMs ?? 100;
  }

  async start(emit: Emit): Promise<void> {
    this.#emit = emit;
    const text = await readFile(this.#path, 'utf8');
    const parsed = parseObjects(text);
    if (parsed.errors.length > 0) {
      throw new Error(`${this.#path}: cannot parse: ${parsed.errors.join('; ')}`);
    }
    this.#report(parsed);
    this.#lastText = text;
    this.#held = index(parsed);
    for (const h of this.#held.values()) emit(event(h.kind, 'upsert', h.object));
    emit({ kind: 'Synced' });
    if (this.#watch) {
      // Watch the folder, not the file: editors and ConfigMap volumes replace
      // the file by rename, which ends a watch on the old inode.
      const name = basename(this.#path);
      this.#watcher = watch(dirname(this.#path), (_type, file) => {
        if (file === null || file === name || file.startsWith('..')) this.#schedule();
      });
      this.#watcher.on('error', (err) => this.#log.error({ err }, 'watching the file failed'));
    }
  }

  async stop(): Promise<void> {
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#emit = undefined;
    await this.#reading;
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#reading = this.#reading.then(() => this.#reload());
    }, this.#debounceMs);
  }

  #report(parsed: ParsedObjects): void {
    for (const what of parsed.ignored) this.#log.debug({ object: what }, 'object of another kind ignored');
  }

  async #reload(): Promise<void> {
    const emit = this.#emit;
    if (!emit) return;
    let text: string;
    try {
      text = await readFile(this.#path, 'utf8');
    } catch (err) {
      // Mid-rename the file may be briefly absent; the next event re-reads it.
      this.#log.warn({ err: (err as Error).message }, 'cannot read the file; previous content stays in force');
      return;
    }
    if (text === this.#lastText || !this.#emit) return;
    // An empty file is almost always one caught mid-write (truncate, then
    // write); removing every Service because of it would drop all traffic.
    if (text.trim() === '' && this.#held.size > 0) {
      this.#log.warn('the file is empty; previous content stays in force (an empty `kind: List` removes everything)');
      return;
    }
    const parsed = parseObjects(text);
    if (parsed.errors.length > 0) {
      this.#log.error({ errors: parsed.errors }, 'cannot parse the file; previous content stays in force');
      return;
    }
    this.#report(parsed);
    this.#lastText = text;
    const next = index(parsed);
    let upserts = 0, deletes = 0;
    for (const [id, h] of next) {
      const old = this.#held.get(id);
      if (old && old.text === h.text) continue;
      emit(event(h.kind, 'upsert', h.object));
      upserts++;
    }
    for (const [id, h] of this.#held) {
      if (next.has(id)) continue;
      emit(event(h.kind, 'delete', h.object));
      deletes++;
    }
    this.#held = next;
    this.#log.info({ upserts, deletes }, 'file re-read');
  }
}
