// malloc_trim(3) through the small addon built from lib/native/memory.c
// (`npm ci` builds it into build/Release). Without the addon (no compiler
// where kproxy was installed) trimming is skipped: glibc still returns the
// top of its heap by itself.
import { createRequire } from 'node:module';

const ADDON = '../build/Release/kproxy_memory.node';

let addon: { trim(): boolean } | Error | undefined;

/** The addon, or why it cannot be loaded. */
export function cHeapAddon(): { trim(): boolean } | Error {
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url)(ADDON) as { trim(): boolean };
    } catch (e) {
      addon = new Error(`the malloc_trim addon is not built (${(e as Error).message.split('\n')[0]}); run npm ci or npm rebuild`);
    }
  }
  return addon;
}

/** Returns the C heap's free pages to the kernel; true when any were released. */
export function trimCHeap(): boolean {
  const a = cHeapAddon();
  return a instanceof Error ? false : a.trim();
}
