// The DNS cache's native addon (dns-cache/native/*.c), built by `npm ci`
// into build/Release. Everything that uses it has a plain Node.js fallback.
import { createRequire } from 'node:module';
import type { NativeSocket } from './udp-batch.ts';

export interface NativeModule {
  readonly BATCH: number;
  readonly IN_SLOT: number;
  readonly OUT_SLOT: number;
  readonly ADDR_SLOT: number;
  open(host: string, port: number, reusePort: boolean, recvBufferSize: number, onBatch: (n: number) => number): NativeSocket;
  sendTo(handle: object, data: Uint8Array, addr: Uint8Array): number;
  close(handle: object): void;
}

const ADDON = '../build/Release/kproxy_dns.node';

let loaded: NativeModule | Error | undefined;

/** The native module, or why it cannot be used. */
export function nativeModule(): NativeModule | Error {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)(ADDON) as NativeModule;
    } catch (e) {
      loaded = new Error(`the native addon is not built (${(e as Error).message.split('\n')[0]}); run npm ci or npm rebuild`);
    }
  }
  return loaded;
}
