// Who may hold a TCP connection, and for how long. A client that opens many
// connections and dribbles a byte now and then must not keep every slot:
// each message has a deadline from its first byte (however often bytes
// arrive), one address may hold only so many connections, and when the
// total cap is reached the connection idle the longest is closed to make
// room (one waiting for its answer or in the middle of a message is busy,
// not idle). Shared by every TCP listener of the process: descriptors are
// a per-process budget.
import type net from 'node:net';

export interface TcpLimitSettings {
  /** Close a connection with nothing in flight after this long without traffic. */
  readonly idleTimeoutMs: number;
  /** A message must be whole this long after its first byte arrived. */
  readonly messageTimeoutMs: number;
  /** Connections open at once, over every listen address. */
  readonly maxConnections: number;
  /** Connections one client address may hold at once. */
  readonly maxPerClient: number;
}

export const DEFAULT_TCP_LIMITS: TcpLimitSettings = {
  idleTimeoutMs: 10_000, messageTimeoutMs: 3_000, maxConnections: 1000, maxPerClient: 100,
};

/** One open connection's bookkeeping. */
export class TcpConn {
  readonly sock: net.Socket;
  readonly client: string;
  /** Answers not yet sent. */
  pending = 0;
  /** A message has begun but is not whole yet. */
  partial = false;
  timer: NodeJS.Timeout | undefined;

  constructor(sock: net.Socket, client: string) {
    this.sock = sock;
    this.client = client;
  }

  get busy(): boolean {
    return this.partial || this.pending > 0;
  }
}

export interface TcpLimitEvents {
  refused(reason: 'per_client' | 'total'): void;
  reclaimed(): void;
}

/** The address a cap counts by: IPv4-mapped IPv6 counts as its IPv4 address. */
export function clientKey(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export class TcpConnections {
  settings: TcpLimitSettings;
  private readonly events: TcpLimitEvents;
  /** Open connections, least recently active first. */
  private readonly byActivity = new Map<net.Socket, TcpConn>();
  private readonly perClient = new Map<string, number>();

  constructor(settings: TcpLimitSettings, events: TcpLimitEvents) {
    this.settings = settings;
    this.events = events;
  }

  get size(): number {
    return this.byActivity.size;
  }

  /**
   * Admits a new connection, or returns undefined after closing it (its
   * address is at its cap, or every slot is busy). May close the
   * connection idle the longest to make room.
   */
  admit(sock: net.Socket): TcpConn | undefined {
    const client = clientKey(sock.remoteAddress);
    const s = this.settings;
    if ((this.perClient.get(client) ?? 0) >= s.maxPerClient) {
      this.events.refused('per_client');
      sock.destroy();
      return undefined;
    }
    if (this.byActivity.size >= s.maxConnections && !this.reclaimIdle()) {
      this.events.refused('total');
      sock.destroy();
      return undefined;
    }
    const c = new TcpConn(sock, client);
    this.byActivity.set(sock, c);
    this.perClient.set(client, (this.perClient.get(client) ?? 0) + 1);
    sock.setTimeout(s.idleTimeoutMs, () => {
      // Waiting on an upstream is not idleness; the answer comes within the zone's timeout.
      if (c.pending === 0) sock.destroy();
    });
    sock.once('close', () => this.forget(c));
    return c;
  }

  /** Traffic on `c`: it becomes the most recently active. */
  touch(c: TcpConn): void {
    if (!this.byActivity.delete(c.sock)) return;
    this.byActivity.set(c.sock, c);
  }

  /** A message has begun on `c` (its first byte arrived): start its deadline. */
  messageStarted(c: TcpConn): void {
    c.partial = true;
    clearTimeout(c.timer);
    c.timer = setTimeout(() => c.sock.destroy(), this.settings.messageTimeoutMs);
  }

  /** Every byte received so far belongs to whole messages. */
  messagesDone(c: TcpConn): void {
    c.partial = false;
    clearTimeout(c.timer);
    c.timer = undefined;
  }

  /** Closes the connection idle the longest; false when every one is busy. */
  private reclaimIdle(): boolean {
    for (const c of this.byActivity.values()) {
      if (c.busy) continue;
      this.forget(c);
      c.sock.destroy();
      this.events.reclaimed();
      return true;
    }
    return false;
  }

  private forget(c: TcpConn): void {
    clearTimeout(c.timer);
    if (!this.byActivity.delete(c.sock)) return;
    const n = (this.perClient.get(c.client) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(c.client);
    else this.perClient.set(c.client, n);
  }

  /** Closes every connection (shutdown). */
  closeAll(): void {
    for (const c of [...this.byActivity.values()]) c.sock.destroy();
  }
}
