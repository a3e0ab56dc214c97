// The batched UDP socket (dns-cache/native/udp-batch.c): datagrams arrive
// in groups through memory shared with the native side, and the answers
// ready during the group's turn are sent together. Answers that come later (cache misses) are sent one by one
// to a copy of the client's address.
import type { NativeModule } from './native.ts';

export interface NativeSocket {
  readonly handle: object;
  readonly port: number;
  readonly in: ArrayBuffer;
  readonly meta: ArrayBuffer;
  readonly addr: ArrayBuffer;
  readonly out: ArrayBuffer;
}

/** Sends one answer; bound to one client's address. */
export type Send = (msg: Buffer) => void;

/**
 * What a listener does with each datagram: return the answer now, or call
 * `later()` (at most once, before returning) for a Send to use afterwards.
 */
export type Datagram = (msg: Buffer, later: () => Send) => Buffer | undefined;

export interface BatchSocket {
  readonly port: number;
  close(): void;
}

export function openBatchSocket(native: NativeModule, host: string, port: number, reusePort: boolean, recvBufferSize: number,
  onDatagram: Datagram, onDrop: (why: Error | 'oversize') => void): BatchSocket {
  const { BATCH, IN_SLOT, OUT_SLOT, ADDR_SLOT } = native;
  let input: Buffer = Buffer.alloc(0);
  let addr: Buffer = Buffer.alloc(0);
  let out: Buffer = Buffer.alloc(0);
  let meta = new Int32Array(0);
  let handle: object | undefined;
  let current = -1;
  let open = true;

  const sendLater = (msg: Buffer, to: Buffer): void => {
    if (open && handle) native.sendTo(handle, msg, to);
  };
  // Copies the current datagram's address for an answer given after this turn.
  const later = (): Send => {
    const to = Buffer.from(addr.subarray(current * ADDR_SLOT, (current + 1) * ADDR_SLOT));
    return (msg) => sendLater(msg, to);
  };

  const onBatch = (n: number): number => {
    let queued = 0;
    for (let i = 0; i < n; i++) {
      const len = meta[i];
      if (len < 0) {
        onDrop('oversize');
        continue;
      }
      current = i;
      const at = i * IN_SLOT;
      let answer: Buffer | undefined;
      try {
        answer = onDatagram(input.subarray(at, at + len), later);
      } catch (e) {
        // One bad datagram must not cost the others of its batch their answers.
        onDrop(e as Error);
        continue;
      }
      if (answer === undefined) continue;
      if (answer.length > OUT_SLOT) {
        later()(answer);
        continue;
      }
      answer.copy(out, queued * OUT_SLOT);
      meta[BATCH + queued] = answer.length;
      meta[2 * BATCH + queued] = i;
      queued++;
    }
    current = -1;
    return queued;
  };

  const s = native.open(host, port, reusePort, recvBufferSize, onBatch);
  handle = s.handle;
  input = Buffer.from(s.in);
  addr = Buffer.from(s.addr);
  out = Buffer.from(s.out);
  meta = new Int32Array(s.meta);
  return {
    port: s.port,
    close() {
      if (!open || !handle) return;
      open = false;
      native.close(handle);
    },
  };
}
