// kproxy's own nf_tables event listener (modes/native/nft-events.c, run
// as modes/nft-events-process.js): how to start it and how to read its
// lines. It reports what `nft monitor` reports that kproxy needs (each
// change's object, table and chain or set, and each transaction's
// generation line naming its process) without reading or keeping the
// ruleset. When the addon is not built (no compiler where kproxy was
// installed), modes/nft-monitor.ts runs `nft monitor` instead.
import { loadAddon } from '../lib/addon.ts';
import { fileURLToPath } from 'node:url';

/** The addon's functions (see modes/native/nft-events.c). */
export interface NftEventsAddon {
  listen(rcvbufBytes: number): [fd: number, rcvbuf: number];
  pump(fd: number, outFd: number, maxKeys: number): string;
  format(messages: Buffer, maxKeys: number): string;
}

const defaultAddon = fileURLToPath(new URL('../build/Release/kproxy_nft_events.node', import.meta.url));
const script = fileURLToPath(new URL('./nft-events-process.js', import.meta.url));

/**
 * Where the addon is: build/Release, or KPROXY_NFT_EVENTS_ADDON (a path;
 * pointing it at a file that does not exist runs `nft monitor` as on a
 * node where the addon was not built).
 */
export function nftEventsAddonPath(): string {
  return process.env.KPROXY_NFT_EVENTS_ADDON || defaultAddon;
}

/** The addon, or why it cannot be used. */
export function nftEventsAddon(path = nftEventsAddonPath()): NftEventsAddon | Error {
  return loadAddon<NftEventsAddon>(path, 'nf_tables event', ['listen', 'pump', 'format']);
}

export interface ListenerOptions {
  /**
   * The socket's receive buffer asked for (the kernel doubles it; default
   * 32 MiB, so 64 MiB: kernel memory used only while events wait). The
   * listener reads as fast as the kernel writes, but kproxy's own full sync
   * at 10,000 Services makes about 220,000 messages in one commit.
   */
  readonly rcvbufBytes?: number;
  /** Element keys reported per run of element changes; larger runs report their count only (default 64). */
  readonly maxKeys?: number;
}

/** The command that runs the listener: this Node.js binary and the small script. */
export function listenerCommand(addonPath: string, o: ListenerOptions = {}): { tool: string; args: string[] } {
  return { tool: process.execPath, args: [script, addonPath, String(o.rcvbufBytes ?? 32 << 20), String(o.maxKeys ?? 64)] };
}

/** A change line of the listener: the object, where it is, how many like changes, and element keys in hex when it said them. */
export interface ListenerEvent {
  readonly verb: string;
  readonly object: string;
  readonly family: string;
  readonly table: string;
  readonly name: string;
  readonly count: number;
  /** Element keys (hex; "!" before an interval's end, "~END" after a range's start, "*" for none), one per change, when given. */
  readonly keys?: readonly string[];
}

const unescape = (s: string): string => (s.includes('\\x') ? s.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))) : s);

/** Parses one change line of the listener; undefined for anything else. */
export function parseListenerEvent(line: string): ListenerEvent | undefined {
  const f = line.split(' ');
  if (f.length < 5 || !/^(add|replace|delete)$/.test(f[0])) return undefined;
  const [verb, object, family, table] = f;
  const hasName = object !== 'table';
  const countAt = hasName ? 5 : 4;
  if (!/^[1-9]\d*$/.test(f[countAt] ?? '')) return undefined;
  const count = Number(f[countAt]);
  const keys = f.slice(countAt + 1);
  const e = { verb, object, family, table: unescape(table), name: hasName ? unescape(f[4]) : '', count };
  return keys.length === count && object === 'element' ? { ...e, keys } : e;
}

/** "ready RCVBUF": the listener is subscribed; the receive buffer the kernel granted. */
export function parseReady(line: string): number | undefined {
  const m = /^ready (\d+)$/.exec(line);
  return m ? Number(m[1]) : undefined;
}

export const lostLine = '# lost events';
