// Loading kproxy's Node-API addons (built by `npm ci` into build/Release).
// Every part that uses one has a fallback, so a missing or stale addon is
// an Error value that says how to fix it, never a thrown exception.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const loaded = new Map<string, unknown>();

/**
 * The addon at `path` (absolute, or a file URL), once it exports every
 * function in `functions`; else an Error naming `what` and the fix. Loaded
 * once per path.
 */
export function loadAddon<T>(path: string | URL, what: string, functions: readonly string[] = []): T | Error {
  const key = String(path);
  if (!loaded.has(key)) {
    let result: unknown;
    try {
      const m = createRequire(import.meta.url)(path instanceof URL ? fileURLToPath(path) : path) as Record<string, unknown>;
      const missing = functions.filter((f) => typeof m[f] !== 'function');
      result = missing.length === 0 ? m : new Error(`the ${what} addon lacks ${missing.join(', ')}; rebuild it (npm rebuild)`);
    } catch (e) {
      result = new Error(`the ${what} addon is not built (${(e as Error).message.split('\n')[0]}); run npm ci or npm rebuild`);
    }
    loaded.set(key, result);
  }
  return loaded.get(key) as T | Error;
}
