// The DNS cache's native addon (dns-cache/native/*.c), built by `npm ci`
// into build/Release. Everything that uses it has a plain Node.js fallback.
import { loadAddon } from '../lib/addon.ts';
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

/** The native module, or why it cannot be used. */
export function nativeModule(): NativeModule | Error {
  return loadAddon<NativeModule>(new URL('../build/Release/kproxy_dns.node', import.meta.url), 'DNS cache', ['open', 'sendTo', 'close']);
}
