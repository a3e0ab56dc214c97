// One upstream DNS server: queries over a shared UDP socket (random IDs,
// answers checked against the question), TCP when asked or when the UDP
// answer is truncated, and the failure count that health checks reset.
import { hostPort } from '../lib/net.ts';
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from '../lib/log.ts';
import { sameQuestion, upstreamQuery } from './wire.ts';

export interface UpstreamAddress {
  readonly host: string;
  readonly port: number;
}

export function formatAddress(a: UpstreamAddress): string {
  return hostPort(a.host, a.port);
}

/** Connected UDP sockets per upstream (source ports a spoofer must guess). */
const UDP_SOCKETS = 4;

export class UpstreamError extends Error {
  readonly upstream: string;
  constructor(upstream: string, message: string) {
    super(`${upstream}: ${message}`);
    this.name = 'UpstreamError';
    this.upstream = upstream;
  }
}

interface Pending {
  readonly question: Buffer;
  readonly resolve: (msg: Buffer) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
  readonly sock: dgram.Socket;
}

export interface UpstreamHooks {
  /** A health check failed (coredns_forward_healthcheck_failures_total). */
  onHealthcheckFailure(to: string): void;
  onStateChange(to: string, healthy: boolean): void;
}

export class Upstream {
  readonly address: UpstreamAddress;
  readonly label: string;
  fails = 0;
  private readonly maxFails: number;
  private readonly healthCheckMs: number;
  private readonly forceTcp: boolean;
  private readonly log: Logger;
  private readonly hooks: UpstreamHooks;
  private socks: Array<dgram.Socket | undefined> = [];
  private readonly connecting: Array<Promise<dgram.Socket> | undefined> = [];
  private readonly pending = new Map<number, Pending>();
  private healthTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(address: UpstreamAddress, opts: { maxFails: number; healthCheckMs: number; forceTcp: boolean }, log: Logger, hooks: UpstreamHooks) {
    this.address = address;
    this.label = formatAddress(address);
    this.maxFails = opts.maxFails;
    this.healthCheckMs = opts.healthCheckMs;
    this.forceTcp = opts.forceTcp;
    this.log = log;
    this.hooks = hooks;
  }

  /** Down after max_fails failures in a row (max_fails 0: never down). */
  get healthy(): boolean {
    return this.maxFails === 0 || this.fails < this.maxFails;
  }

  /**
   * Sends `query` (ID is overwritten) and resolves with the raw answer, over
   * TCP if forced or if the UDP answer came back truncated.
   */
  async exchange(query: Buffer, question: Buffer, timeoutMs: number): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    if (this.forceTcp) return this.exchangeTcp(query, question, timeoutMs);
    const answer = await this.exchangeUdp(query, question, timeoutMs);
    if (answer.length >= 4 && answer[2] & 0x02) {
      return this.exchangeTcp(query, question, Math.max(1, deadline - Date.now()));
    }
    return answer;
  }

  async exchangeUdp(query: Buffer, question: Buffer, timeoutMs: number): Promise<Buffer> {
    // A few connected sockets, one picked at random per query: the kernel
    // drops datagrams from anyone but the upstream, and a spoofer has to
    // guess the source port as well as the random ID.
    const slot = (Math.random() * UDP_SOCKETS) | 0;
    const sock = this.socks[slot] ?? await this.connectSocket(slot);
    let id = (Math.random() * 0x10000) | 0;
    while (this.pending.has(id)) id = (id + 1) & 0xffff;
    const msg = Buffer.from(query);
    msg.writeUInt16BE(id, 0);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new UpstreamError(this.label, `no UDP answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { question, resolve, reject, timer, sock });
      sock.send(msg, (err) => {
        if (!err) return;
        const p = this.pending.get(id);
        if (!p) return;
        clearTimeout(p.timer);
        this.pending.delete(id);
        reject(new UpstreamError(this.label, `UDP send failed: ${err.message}`));
      });
    });
  }

  exchangeTcp(query: Buffer, question: Buffer, timeoutMs: number): Promise<Buffer> {
    const id = (Math.random() * 0x10000) | 0;
    const framed = Buffer.allocUnsafe(query.length + 2);
    framed.writeUInt16BE(query.length, 0);
    query.copy(framed, 2);
    framed.writeUInt16BE(id, 2);
    return new Promise((resolve, reject) => {
      const conn = net.connect({ host: this.address.host, port: this.address.port });
      const chunks: Buffer[] = [];
      let got = 0;
      const fail = (why: string): void => {
        conn.destroy();
        reject(new UpstreamError(this.label, why));
      };
      const timer = setTimeout(() => fail(`no TCP answer within ${timeoutMs} ms`), timeoutMs);
      conn.on('connect', () => conn.write(framed));
      conn.on('data', (b: Buffer) => {
        chunks.push(b);
        got += b.length;
        if (got < 2) return;
        const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
        const len = all.readUInt16BE(0);
        if (got < len + 2) return;
        clearTimeout(timer);
        conn.destroy();
        const answer = all.subarray(2, len + 2);
        if (len < 12 || answer.readUInt16BE(0) !== id || !sameQuestion(answer, 12, question, 0, question.length)) {
          reject(new UpstreamError(this.label, 'TCP answer does not match the query'));
        } else resolve(answer);
      });
      conn.on('error', (e) => { clearTimeout(timer); fail(`TCP: ${e.message}`); });
      conn.on('end', () => { clearTimeout(timer); fail('TCP connection closed before an answer'); });
    });
  }

  succeeded(): void {
    if (!this.healthy) this.hooks.onStateChange(this.label, true);
    this.fails = 0;
  }

  /** Counts a failed exchange; at max_fails the upstream goes down and is health-checked. */
  failed(): void {
    this.countFailure();
    this.startHealthChecks();
  }

  private countFailure(): void {
    this.fails++;
    if (this.maxFails > 0 && this.fails === this.maxFails) {
      this.log.warn({ upstream: this.label, fails: this.fails }, 'upstream down after max_fails failures; health-checking it');
      this.hooks.onStateChange(this.label, false);
    }
  }

  private startHealthChecks(): void {
    if (this.healthTimer || this.closed || this.healthCheckMs <= 0) return;
    const check = async (): Promise<void> => {
      // ". IN NS": any well-formed answer (even REFUSED) shows the server is alive.
      const q = upstreamQuery(Buffer.from([0, 0, 2, 0, 1]), false, false);
      try {
        await this.exchange(q, q.subarray(12, 17), Math.max(100, this.healthCheckMs));
        this.succeeded();
      } catch {
        this.hooks.onHealthcheckFailure(this.label);
        this.countFailure();
      }
      if (this.fails === 0 || this.closed) {
        this.healthTimer = undefined;
        return;
      }
      this.healthTimer = setTimeout(() => void check(), this.healthCheckMs).unref();
    };
    this.healthTimer = setTimeout(() => void check(), this.healthCheckMs).unref();
  }

  private connectSocket(slot: number): Promise<dgram.Socket> {
    let p = this.connecting[slot];
    if (p) return p;
    p = new Promise<dgram.Socket>((resolve, reject) => {
      const sock = dgram.createSocket(this.address.host.includes(':') ? 'udp6' : 'udp4');
      sock.on('message', (msg) => this.onAnswer(msg, sock));
      // ICMP errors (e.g. port unreachable from a dead upstream) show up here;
      // the query's own timeout reports the failure.
      sock.on('error', (e) => this.log.debug({ upstream: this.label, err: e.message }, 'upstream UDP socket error'));
      sock.unref();
      sock.connect(this.address.port, this.address.host, () => {
        if (this.closed) {
          sock.close();
          reject(new UpstreamError(this.label, 'upstream closed'));
          return;
        }
        this.socks[slot] = sock;
        resolve(sock);
      });
    });
    p.catch(() => { this.connecting[slot] = undefined; });
    this.connecting[slot] = p;
    return p;
  }

  private onAnswer(msg: Buffer, sock: dgram.Socket): void {
    if (msg.length < 12) return;
    const id = msg.readUInt16BE(0);
    const p = this.pending.get(id);
    // Answers that do not echo our question, or come in on another socket,
    // are ignored (spoofing, late strays).
    if (!p || p.sock !== sock || !(msg[2] & 0x80) || !sameQuestion(msg, 12, p.question, 0, p.question.length)) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    p.resolve(msg);
  }

  close(): void {
    this.closed = true;
    if (this.healthTimer) clearTimeout(this.healthTimer);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new UpstreamError(this.label, 'upstream closed'));
    }
    this.pending.clear();
    for (const sock of this.socks) sock?.close();
    this.socks = [];
  }
}
