// UDP and TCP listeners on the configured addresses only: binding to the
// node-local addresses (never a wildcard) is what keeps this cache from
// being an open resolver for clients off the node.
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from '../lib/log.ts';
import type { ListenAddress, UdpIo } from './config.ts';
import type { Origin, Resolver } from './resolver.ts';
import { nativeModule } from './native.ts';
import { TcpConnections, type TcpLimitEvents, type TcpLimitSettings } from './tcp-limits.ts';
import { openBatchSocket, type BatchSocket } from './udp-batch.ts';

/** Bytes a TCP client may have buffered with us before it is cut off. */
const TCP_MAX_BUFFERED = 256 * 1024;
/**
 * UDP receive buffer. The default (212,992 bytes) holds only about 200
 * small queries: a burst from many clients during a GC pause overflows it,
 * and each dropped query costs its client a retry timeout. The kernel caps
 * the size at net.core.rmem_max.
 */
const UDP_RECV_BUFFER = 4 * 1024 * 1024;

/** A UDP socket of either kind, as the listeners need it. */
export interface UdpSocket {
  close(): void;
}

export interface Listeners {
  readonly udp: readonly UdpSocket[];
  /** The UDP socket kind in use (batched falls back to dgram when not built). */
  readonly udpIo: UdpIo;
  readonly tcp: readonly net.Server[];
  /** New TCP limits for new and open connections (config reload). */
  setTcpLimits(limits: TcpLimitSettings): void;
  close(): Promise<void>;
}

const origins = new Map<string, Origin>();

/**
 * The one Origin of an address and protocol: every socket of it shares the
 * object, so per-entry metric slots (checked by identity) stay valid.
 */
function originOf(a: ListenAddress, proto: 'udp' | 'tcp'): Origin {
  const server = serverLabel(a);
  let o = origins.get(`${server} ${proto}`);
  if (o === undefined) {
    o = { id: origins.size + 1, server, proto, family: a.host.includes(':') ? '2' : '1' };
    origins.set(`${server} ${proto}`, o);
  }
  return o;
}

export function serverLabel(a: ListenAddress): string {
  return a.host.includes(':') ? `dns://[${a.host}]:${a.port}` : `dns://${a.host}:${a.port}`;
}

function bindUdp(a: ListenAddress, reusePort: boolean, resolver: Resolver, log: Logger): Promise<dgram.Socket> {
  const v6 = a.host.includes(':');
  const family = v6 ? 6 : 4;
  const sock = dgram.createSocket({
    type: v6 ? 'udp6' : 'udp4', reuseAddr: false, reusePort, recvBufferSize: UDP_RECV_BUFFER,
    // Replies go to the sender's address, always an IP literal: skip the
    // resolver's per-send validation and deferral.
    lookup: (host: string, _opts: unknown, cb: (err: null, address: string, family: number) => void) => cb(null, host, family),
  } as dgram.SocketOptions);
  const origin = originOf(a, 'udp');
  let open = true;
  sock.on('close', () => { open = false; });
  sock.on('message', (msg, rinfo) => {
    // Answers may land after close (upstream replies during shutdown): drop them.
    const send = (out: Buffer): void => { if (open) sock.send(out, rinfo.port, rinfo.address); };
    const now = resolver.handle(msg, origin, () => send);
    // A queued send keeps its buffer; the resolver reuses a hit's memory.
    if (now) send(Buffer.from(now));
  });
  return new Promise((resolve, reject) => {
    sock.once('error', (e) => reject(new Error(`cannot listen on udp ${a.host}:${a.port}: ${e.message}`)));
    sock.bind({ address: a.host, port: a.port, exclusive: true }, () => {
      sock.removeAllListeners('error');
      sock.on('error', (e) => log.warn({ err: e.message }, 'UDP socket error'));
      resolve(sock);
    });
  });
}

function bindBatched(a: ListenAddress, reusePort: boolean, resolver: Resolver, log: Logger): BatchSocket {
  const native = nativeModule();
  if (native instanceof Error) throw native;
  const origin = originOf(a, 'udp');
  try {
    return openBatchSocket(native, a.host, a.port, reusePort, UDP_RECV_BUFFER,
      (msg, later) => resolver.handle(msg, origin, later),
      (why) => {
        if (why === 'oversize') resolver.oversizeQuery();
        else log.warn({ err: why.message }, 'answering a UDP query failed');
      });
  } catch (e) {
    throw new Error(`cannot listen on udp ${a.host}:${a.port}: ${(e as Error).message}`);
  }
}

function bindTcp(a: ListenAddress, port: number, resolver: Resolver, conns: TcpConnections, log: Logger): Promise<net.Server> {
  const origin = originOf(a, 'tcp');
  const server = net.createServer({ noDelay: true }, (sock) => {
    const conn = conns.admit(sock);
    if (conn === undefined) return;
    let buf: Buffer = Buffer.alloc(0);
    sock.on('error', () => sock.destroy());
    const reply = (out: Buffer): void => {
      if (sock.destroyed) return;
      const head = Buffer.allocUnsafe(2);
      head.writeUInt16BE(out.length, 0);
      sock.write(Buffer.concat([head, out]));
      conns.touch(conn);
    };
    const later = (): ((out: Buffer) => void) => {
      conn.pending++;
      return (out) => {
        conn.pending--;
        reply(out);
      };
    };
    sock.on('data', (chunk: Buffer) => {
      const wasPartial = buf.length > 0;
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (buf.length > TCP_MAX_BUFFERED || sock.writableLength > TCP_MAX_BUFFERED) {
        sock.destroy();
        return;
      }
      let whole = false;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) break;
        const msg = Buffer.from(buf.subarray(2, len + 2));
        buf = buf.subarray(len + 2);
        whole = true;
        const now = resolver.handle(msg, origin, later);
        if (now) reply(now);
        if (sock.destroyed) return;
      }
      if (whole) conns.touch(conn);
      // The deadline runs from the first byte of each message: a message
      // left partial after whole ones began in this chunk.
      if (buf.length === 0) conns.messagesDone(conn);
      else if (!wasPartial || whole) conns.messageStarted(conn);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot listen on tcp ${a.host}:${port}: ${e.message}`)));
    server.listen({ host: a.host, port, exclusive: true }, () => {
      server.removeAllListeners('error');
      server.on('error', (e) => log.warn({ err: e.message }, 'TCP server error'));
      resolve(server);
    });
  });
}

/**
 * Binds UDP and TCP on every address (port 0: one ephemeral port shared by
 * both protocols, for tests). Returns the bound addresses.
 */
export interface ListenOptions {
  readonly udpSockets: number;
  readonly udpIo: UdpIo;
  readonly tcp: TcpLimitSettings;
  readonly tcpEvents: TcpLimitEvents;
}

export async function listen(addrs: readonly ListenAddress[], opts: ListenOptions, resolver: Resolver, log: Logger): Promise<Listeners & { bound: ListenAddress[] }> {
  const { udpSockets, udpIo } = opts;
  const udp: UdpSocket[] = [];
  const tcp: net.Server[] = [];
  const bound: ListenAddress[] = [];
  const conns = new TcpConnections(opts.tcp, opts.tcpEvents);
  const close = async (): Promise<void> => {
    for (const s of udp) s.close();
    const closing = tcp.map((s) => new Promise<void>((r) => s.close(() => r())));
    conns.closeAll();
    await Promise.all(closing);
  };
  let io = udpIo;
  const native = nativeModule();
  if (io === 'batched' && native instanceof Error) {
    log.warn({ err: native.message }, 'falling back to one system call per UDP datagram (udp_io: dgram)');
    io = 'dgram';
  }
  const bindOne = async (a: ListenAddress, reusePort: boolean): Promise<{ sock: UdpSocket; port: number }> => {
    if (io === 'batched') {
      const sock = bindBatched(a, reusePort, resolver, log);
      return { sock, port: sock.port };
    }
    const sock = await bindUdp(a, reusePort, resolver, log);
    return { sock, port: sock.address().port };
  };
  // Port 0 (tests): UDP picks the port, and TCP may find it taken by some
  // connection's local port; then both try again on a new one.
  const bindPair = async (a: ListenAddress): Promise<number> => {
    for (let attempt = 1; ; attempt++) {
      // Each socket joins `udp` once bound, so a later failure closes it too.
      const first = await bindOne(a, udpSockets > 1);
      const socks = [first.sock];
      udp.push(first.sock);
      const port = first.port;
      for (let i = 1; i < udpSockets; i++) {
        const more = (await bindOne({ host: a.host, port }, true)).sock;
        socks.push(more);
        udp.push(more);
      }
      try {
        tcp.push(await bindTcp(a, port, resolver, conns, log));
        return port;
      } catch (e) {
        if (a.port !== 0 || attempt >= 10 || !/EADDRINUSE/.test((e as Error).message)) throw e;
        for (const sock of socks) {
          sock.close();
          udp.splice(udp.indexOf(sock), 1);
        }
      }
    }
  };
  try {
    for (const a of addrs) {
      const port = await bindPair(a);
      bound.push({ host: a.host, port });
    }
  } catch (e) {
    await close();
    throw e;
  }
  const setTcpLimits = (limits: TcpLimitSettings): void => { conns.settings = limits; };
  return { udp, udpIo: io, tcp, bound, setTcpLimits, close };
}
