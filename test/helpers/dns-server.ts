// A small authoritative DNS server for tests (UDP and TCP on one port): it
// answers from a record table, denies with an SOA (NXDOMAIN / NODATA),
// truncates UDP answers that do not fit, and counts what it receives so
// tests can see which queries reached it. It can also go silent, answer
// SERVFAIL, or be stopped outright like a dead upstream.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

export interface TestRecord {
  readonly type: string;
  readonly data: unknown;
  readonly ttl?: number;
}

export interface TestDnsServerOptions {
  /** Apex(es) of the zone(s) it is authoritative for, e.g. "cluster.local". */
  readonly zone: string | readonly string[];
  /** name (any case) -> records. */
  readonly records?: Record<string, TestRecord[]>;
  readonly host?: string;
  readonly port?: number;
  /** TTL of the SOA record and its MINIMUM field. */
  readonly soaTtl?: number;
  readonly soaMinimum?: number;
  /** Answer every other name in the zone with this A record (benchmarks). */
  readonly wildcard?: TestRecord;
}

const FLAG_AA = 1 << 10;
const FLAG_TC = 1 << 9;
const RCODES: Record<string, number> = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 };

export class TestDnsServer {
  readonly host: string;
  port = 0;
  readonly zones: readonly string[];
  records = new Map<string, TestRecord[]>();
  soaTtl: number;
  soaMinimum: number;
  wildcard: TestRecord | undefined;
  /** Drop every query without answering. */
  silent = false;
  /** Answer every query with SERVFAIL. */
  servfail = false;
  /** Delay before answering, ms. */
  delayMs = 0;
  /** Queries received, by "name type" (name lowercased). */
  readonly counts = new Map<string, number>();
  udpQueries = 0;
  tcpQueries = 0;
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();

  private constructor(opts: TestDnsServerOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.zones = (typeof opts.zone === 'string' ? [opts.zone] : opts.zone).map((z) => z.toLowerCase().replace(/\.$/, ''));
    this.soaTtl = opts.soaTtl ?? 300;
    this.soaMinimum = opts.soaMinimum ?? 60;
    this.wildcard = opts.wildcard;
    for (const [name, rrs] of Object.entries(opts.records ?? {})) this.records.set(name.toLowerCase().replace(/\.$/, ''), rrs);
  }

  static async start(opts: TestDnsServerOptions): Promise<TestDnsServer> {
    const s = new TestDnsServer(opts);
    await s.listen(opts.port ?? 0);
    return s;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** How many queries for `name` (and `type`, if given) arrived. */
  count(name: string, type?: string): number {
    const n = name.toLowerCase().replace(/\.$/, '');
    if (type) return this.counts.get(`${n} ${type}`) ?? 0;
    let sum = 0;
    for (const [k, v] of this.counts) if (k.startsWith(`${n} `)) sum += v;
    return sum;
  }

  /** Binds UDP and TCP on `port` (0: a fresh ephemeral port for both). */
  async listen(port: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const udp = dgram.createSocket(this.host.includes(':') ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, this.host, () => resolve());
      });
      const p = udp.address().port;
      const tcp = net.createServer((c) => this.onConn(c));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(p, this.host, () => resolve());
        });
      } catch (e) {
        udp.close();
        if (port !== 0 || attempt > 20) throw e;
        continue;
      }
      udp.on('message', (msg, rinfo) => {
        this.udpQueries++;
        this.answer(msg, 'udp', (out) => udp.send(out, rinfo.port, rinfo.address));
      });
      this.udp = udp;
      this.tcp = tcp;
      this.port = p;
      return;
    }
  }

  /** Closes both sockets: the server is gone (queries go unanswered or refused). */
  async stop(): Promise<void> {
    this.udp?.close();
    this.udp = undefined;
    for (const c of this.conns) c.destroy();
    await new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r()));
    this.tcp = undefined;
  }

  private onConn(c: net.Socket): void {
    this.conns.add(c);
    c.on('close', () => this.conns.delete(c));
    c.on('error', () => c.destroy());
    let buf = Buffer.alloc(0);
    c.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) {
        const msg = buf.subarray(2, buf.readUInt16BE(0) + 2);
        buf = buf.subarray(msg.length + 2);
        this.tcpQueries++;
        this.answer(Buffer.from(msg), 'tcp', (out) => {
          const head = Buffer.alloc(2);
          head.writeUInt16BE(out.length);
          if (!c.destroyed) c.write(Buffer.concat([head, out]));
        });
      }
    });
  }

  private answer(msg: Buffer, proto: 'udp' | 'tcp', send: (b: Buffer) => void): void {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (!question) return;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    const key = `${name} ${question.type}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    if (this.silent) return;
    const opt = (q.additionals ?? []).find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
    const limit = proto === 'tcp' ? 65535 : opt ? Math.max(512, opt.udpPayloadSize ?? 512) : 512;
    const apex = this.zones.find((z) => name === z || name.endsWith(`.${z}`));
    const inZone = apex !== undefined;
    let rcode = 'NOERROR';
    let answers: dnsPacket.Answer[] = [];
    let authorities: dnsPacket.Answer[] = [];
    if (this.servfail) rcode = 'SERVFAIL';
    else if (!inZone) rcode = 'REFUSED';
    else {
      const rrs = this.records.get(name) ?? (this.wildcard ? [this.wildcard] : undefined);
      const soa = {
        name: apex, type: 'SOA', ttl: this.soaTtl, class: 'IN',
        data: { mname: `ns.${apex}`, rname: `admin.${apex}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: this.soaMinimum },
      } as dnsPacket.Answer;
      if (!rrs) {
        rcode = 'NXDOMAIN';
        authorities = [soa];
      } else {
        answers = rrs.filter((r) => r.type === question.type)
          .map((r) => ({ name: question.name, type: r.type, class: 'IN', ttl: r.ttl ?? 60, data: r.data }) as dnsPacket.Answer);
        if (answers.length === 0) authorities = [soa];
      }
    }
    const base = {
      type: 'response' as const, id: q.id,
      flags: (inZone ? FLAG_AA : 0) | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | RCODES[rcode],
      questions: [question],
      additionals: opt ? [{ name: '.', type: 'OPT', udpPayloadSize: 1232, flags: 0 } as dnsPacket.Answer] : [],
    };
    let out = dnsPacket.encode({ ...base, answers, authorities } as dnsPacket.Packet);
    if (out.length > limit) out = dnsPacket.encode({ ...base, flags: base.flags | FLAG_TC, answers: [], authorities: [] } as dnsPacket.Packet);
    if (this.delayMs > 0) setTimeout(() => send(out), this.delayMs);
    else send(out);
  }
}

// ---- A test client: real UDP and TCP queries, raw or built with dns-packet.

export interface AskOptions {
  readonly id?: number;
  /** EDNS UDP size; undefined sends no OPT. */
  readonly edns?: number;
  readonly dnssecOk?: boolean;
  readonly timeoutMs?: number;
}

export function buildQuery(name: string, type: string, opts: AskOptions = {}): Buffer {
  return dnsPacket.encode({
    type: 'query', id: opts.id ?? Math.floor(Math.random() * 65536), flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' } as dnsPacket.Question],
    additionals: opts.edns !== undefined
      ? [{ name: '.', type: 'OPT', udpPayloadSize: opts.edns, flags: opts.dnssecOk ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.Answer]
      : [],
  } as dnsPacket.Packet);
}

/** Sends raw bytes over UDP; resolves with the answer, or undefined on timeout. */
export function rawUdp(host: string, port: number, msg: Buffer, timeoutMs = 2000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => { s.close(); resolve(undefined); }, timeoutMs);
    s.on('message', (m) => { clearTimeout(timer); s.close(); resolve(m); });
    s.on('error', () => { clearTimeout(timer); s.close(); resolve(undefined); });
    s.send(msg, port, host);
  });
}

/** Sends one length-prefixed message over a new TCP connection. */
export function rawTcp(host: string, port: number, msg: Buffer, timeoutMs = 2000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const c = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    const done = (v: Buffer | undefined): void => { clearTimeout(timer); c.destroy(); resolve(v); };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    c.on('connect', () => {
      const head = Buffer.alloc(2);
      head.writeUInt16BE(msg.length);
      c.write(Buffer.concat([head, msg]));
    });
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= buf.readUInt16BE(0) + 2) done(buf.subarray(2, buf.readUInt16BE(0) + 2));
    });
    c.on('error', () => done(undefined));
    c.on('end', () => done(undefined));
  });
}

/** What dns-packet decodes, typed loosely enough for assertions. */
export interface DecodedRecord {
  readonly name: string;
  readonly type: string;
  readonly ttl?: number;
  readonly data?: unknown;
}
export interface Decoded {
  readonly id?: number;
  readonly rcode?: string;
  readonly flag_tc?: boolean;
  readonly flags?: number;
  readonly questions?: ReadonlyArray<{ readonly name: string; readonly type: string }>;
  readonly answers?: readonly DecodedRecord[];
  readonly authorities?: readonly DecodedRecord[];
  readonly additionals?: readonly DecodedRecord[];
}

export interface Answered {
  readonly raw: Buffer;
  readonly packet: Decoded;
  readonly ms: number;
}

/** Asks `name type` over UDP or TCP; throws on timeout. */
export async function ask(host: string, port: number, name: string, type: string, opts: AskOptions & { tcp?: boolean } = {}): Promise<Answered> {
  const started = performance.now();
  const q = buildQuery(name, type, opts);
  const raw = opts.tcp ? await rawTcp(host, port, q, opts.timeoutMs) : await rawUdp(host, port, q, opts.timeoutMs);
  if (!raw) throw new Error(`no answer for ${name} ${type} from ${host}:${port} within ${opts.timeoutMs ?? 2000} ms`);
  return { raw, packet: dnsPacket.decode(raw) as unknown as Decoded, ms: performance.now() - started };
}

// ---- The cache under test, in this process, on 127.0.0.1 ephemeral ports.

import { startDnsCache, type DnsCacheInstance } from '../../dns-cache/main.ts';
import type { KubeZonesOptions } from '../../dns-cache/kube-zones.ts';
import { parseArgs } from '../../dns-cache/flags.ts';
import { silentLogger, type Logger } from '../../lib/log.ts';

export interface TestCache extends DnsCacheInstance {
  readonly host: string;
  readonly port: number;
  ask(name: string, type: string, opts?: AskOptions & { tcp?: boolean }): Promise<Answered>;
  /** One metric's value from /metrics (summed over matching label sets). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

export async function startTestCache(argv: readonly string[], opts: { watch?: boolean; kube?: KubeZonesOptions; log?: Logger } = {}): Promise<TestCache> {
  const hasListen = argv.includes('--listen');
  // Node set-up never runs on the test machine's own namespace.
  const args = parseArgs([
    ...(hasListen ? [] : ['--listen', '127.0.0.1:0']),
    '--health-addr', '127.0.0.1:0', '--metrics-addr', '127.0.0.1:0', '--setup-interface=false', '--setup-iptables=false', ...argv,
  ]);
  const inst = await startDnsCache(args, { log: opts.log ?? silentLogger(), watch: opts.watch ?? false, kube: opts.kube });
  const { host, port } = inst.bound[0];
  return Object.assign(Object.create(inst) as DnsCacheInstance, inst, {
    host, port,
    ask: (name: string, type: string, o: AskOptions & { tcp?: boolean } = {}) => ask(host, port, name, type, o),
    async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
      const text = await (await fetch(`http://${inst.http.metrics}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const ls = m[2] ?? '';
        if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) sum += Number(m[3]);
      }
      return sum;
    },
  });
}
