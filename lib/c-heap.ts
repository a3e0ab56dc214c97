// malloc_trim(3) through the small addon built from lib/native/memory.c
// (`npm ci` builds it into build/Release). Without the addon (no compiler
// where kproxy was installed) trimming is skipped: glibc still returns the
// top of its heap by itself.
import { loadAddon } from './addon.ts';

/** The addon, or why it cannot be loaded. */
export function cHeapAddon(): { trim(): boolean } | Error {
  return loadAddon<{ trim(): boolean }>(new URL('../build/Release/kproxy_memory.node', import.meta.url), 'malloc_trim', ['trim']);
}

/** Returns the C heap's free pages to the kernel; true when any were released. */
export function trimCHeap(): boolean {
  const a = cHeapAddon();
  return a instanceof Error ? false : a.trim();
}
