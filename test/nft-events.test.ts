// kproxy's nf_tables event listener (modes/native/nft-events.c run as
// modes/nft-events-process.js): what it prints for real netlink messages of
// the kernel, in a network namespace each test creates, for real nft and
// iptables-nft transactions; how runs of like changes are coalesced; that a
// full receive buffer is reported as a loss; and that malformed input
// never crashes the parser.
import test from 'ava';
import { netnsExec } from '../lib/exec.ts';
import { listenerCommand, nftEventsAddon, nftEventsAddonPath, parseListenerEvent, type NftEventsAddon } from '../modes/nft-events.ts';
import { createNetns, deleteNetns, nsExec, requireKernelPrerequisites } from './helpers/netns.ts';

const tools = [{ tool: 'ip', pkg: 'iproute2' }, { tool: 'nft', pkg: 'nftables' }, { tool: 'iptables-nft', pkg: 'iptables' }];

function addon(): NftEventsAddon {
  const a = nftEventsAddon();
  if (a instanceof Error) throw new Error(`${a.message}: install g++, make and python3, then npm ci`);
  return a;
}

interface Listening {
  readonly ns: string;
  readonly lines: string[];
  readonly pid: number;
  /** Resolves once `n` generation lines have come (or rejects after 10 s). */
  generations(n: number): Promise<string[]>;
  /** Lines between the generation lines number `from` (0: the start) and `to` (1-based), without the ready line. */
  between(from: number, to: number): string[];
  /** The pid and comm of the exec's last tool. */
  lastTool(): { pid: number; comm: string };
  nft(batch: string): Promise<void>;
}

async function listening(t: import('ava').ExecutionContext, o: { rcvbufBytes?: number; maxKeys?: number } = {}): Promise<Listening> {
  requireKernelPrerequisites(tools);
  addon();
  const ns = await createNetns('kpxev');
  t.teardown(() => deleteNetns(ns));
  const exec = netnsExec(ns);
  const lines: string[] = [];
  const cmd = listenerCommand(nftEventsAddonPath(), o);
  let stderr = '';
  const child = exec.stream!(cmd.tool, cmd.args, { onLine: (l) => lines.push(l), onStderr: (s) => { stderr += s; } });
  t.teardown(() => child.stop());
  const until = async (done: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`${what} did not come; lines: ${JSON.stringify(lines.slice(-20))} stderr: ${stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await until(() => lines.some((l) => /^ready \d+$/.test(l)), 'the ready line');
  const gens = (): string[] => lines.filter((l) => l.startsWith('# new generation '));
  return {
    ns, lines, pid: child.pid!,
    async generations(n) {
      await until(() => gens().length >= n, `${n} generation lines`);
      return gens();
    },
    between(from, to) {
      const out: string[] = [];
      let g = 0;
      for (const l of lines) {
        if (l.startsWith('ready ')) continue;
        if (l.startsWith('# new generation ')) {
          g++;
          if (g >= to) break;
          continue;
        }
        if (g >= from) out.push(l);
      }
      return out;
    },
    lastTool() {
      const r = exec.children!.all().at(-1)!;
      return { pid: r.pid, comm: r.comm };
    },
    async nft(batch) {
      await exec('/usr/sbin/nft', ['-f', '-'], batch);
    },
  };
}

test('each change of a transaction is one line with its object, family, table and name; the transaction ends with its generation line naming the process', async (t) => {
  const l = await listening(t);
  await l.nft([
    'add table ip kproxy',
    'add chain ip kproxy c',
    'add rule ip kproxy c return',
    'add rule ip kproxy c return',
    'add map ip kproxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }',
    'add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : goto c, 10.96.0.11 . udp . 53 : goto c }',
    'add table ip6 six',
    'add counter ip6 six requests',
    'add table inet both',
    '',
  ].join('\n'));
  const own = l.lastTool();
  const [gen] = await l.generations(1);
  t.regex(gen, new RegExp(`^# new generation \\d+ by process ${own.pid} \\(nft\\)$`), 'the pid the kernel reports is the one kproxy started');
  t.deepEqual(l.between(0, 1), [
    'add table ip kproxy 1',
    'add chain ip kproxy c 1',
    'add rule ip kproxy c 2',
    'add set ip kproxy service-ips 1',
    'add element ip kproxy service-ips 2 0a60000a0600000000500000 0a60000b1100000000350000',
    'add table ip6 six 1',
    'add obj ip6 six requests 1',
    'add table inet both 1',
  ]);

  // Someone else: a flushed chain, a deleted element, the table deleted.
  await nsExec(l.ns, 'nft', ['flush', 'chain', 'ip', 'kproxy', 'c']);
  await nsExec(l.ns, 'nft', ['delete', 'element', 'ip', 'kproxy', 'service-ips', '{ 10.96.0.11 . udp . 53 }']);
  await nsExec(l.ns, 'nft', ['delete', 'table', 'ip', 'kproxy']);
  const gens = await l.generations(4);
  t.deepEqual(l.between(1, 2), ['delete rule ip kproxy c 2']);
  t.deepEqual(l.between(2, 3), ['delete element ip kproxy service-ips 1 0a60000b1100000000350000']);
  t.deepEqual(l.between(3, 4), ['delete set ip kproxy service-ips 1', 'delete chain ip kproxy c 1', 'delete table ip kproxy 1']);
  const ids = gens.map((g) => Number(/generation (\d+)/.exec(g)![1]));
  t.deepEqual(ids.slice(1), [ids[0] + 1, ids[0] + 2, ids[0] + 3], 'generations are numbered in sequence');
  t.true(gens.slice(1).every((g) => / \(nft\)$/.test(g)));
  t.deepEqual(parseListenerEvent('delete element ip kproxy service-ips 1 0a60000b1100000000350000'),
    { verb: 'delete', object: 'element', family: 'ip', table: 'kproxy', name: 'service-ips', count: 1, keys: ['0a60000b1100000000350000'] });
});

test('iptables-nft changes are seen as rule and chain changes of the ip nat table', async (t) => {
  const l = await listening(t);
  await nsExec(l.ns, 'iptables-nft', ['-w', '-t', 'nat', '-N', 'KUBE-SERVICES']);
  await nsExec(l.ns, 'iptables-nft', ['-w', '-t', 'nat', '-A', 'KUBE-SERVICES', '-j', 'RETURN']);
  await nsExec(l.ns, 'iptables-nft', ['-w', '-t', 'nat', '-F', 'KUBE-SERVICES']);
  const gens = await l.generations(3);
  t.deepEqual(l.between(0, 1), ['add table ip nat 1', 'add chain ip nat KUBE-SERVICES 1']);
  t.deepEqual(l.between(1, 2), ['add rule ip nat KUBE-SERVICES 1']);
  t.deepEqual(l.between(2, 3), ['delete rule ip nat KUBE-SERVICES 1']);
  t.regex(gens[2], / \(iptables-nft\)$/);
});

test('runs of like changes are one line with their count; keys only when the run is short', async (t) => {
  const l = await listening(t, { maxKeys: 4 });
  const elements = (n: number) => Array.from({ length: n }, (_, i) => `10.96.${i >> 8}.${i & 255} . 80 . ${i % 3} : 10.1.0.1 . 8080`).join(', ');
  await l.nft([
    'add table ip kproxy',
    'add map ip kproxy endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport; }',
    `add element ip kproxy endpoints-tcp { ${elements(5000)} }`,
    '',
  ].join('\n'));
  await l.generations(1);
  t.deepEqual(l.between(0, 1), ['add table ip kproxy 1', 'add set ip kproxy endpoints-tcp 1', 'add element ip kproxy endpoints-tcp 5000']);
  await nsExec(l.ns, 'nft', ['delete', 'element', 'ip', 'kproxy', 'endpoints-tcp', '{ 10.96.0.1 . 80 . 1, 10.96.0.2 . 80 . 2, 10.96.0.3 . 80 . 0 }']);
  await l.generations(2);
  t.deepEqual(l.between(1, 2), ['delete element ip kproxy endpoints-tcp 3 0a60000100500000' + hostU32(1) + ' 0a60000200500000' + hostU32(2) + ' 0a60000300500000' + hostU32(0)],
    'numgen\'s index is a host-order number');
  await nsExec(l.ns, 'nft', ['flush', 'map', 'ip', 'kproxy', 'endpoints-tcp']);
  await l.generations(3);
  t.deepEqual(l.between(2, 3), ['delete element ip kproxy endpoints-tcp 4997']);
});

function hostU32(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString('hex');
}

test('interval sets: the keys that end an interval are marked', async (t) => {
  const l = await listening(t);
  await l.nft('add table ip f\nadd set ip f ranges { type ipv4_addr; flags interval; }\nadd element ip f ranges { 10.0.0.0/8 }\n');
  await l.generations(1);
  const [line] = l.between(0, 1).filter((x) => x.startsWith('add element'));
  t.true(/^add element ip f ranges \d+( !?[0-9a-f]+)+$/.test(line), line);
  t.true(line.includes(' 0a000000') && line.includes(' !0b000000'), line);
});

test('a full receive buffer is reported as lost events, and the listener goes on', async (t) => {
  // The smallest buffer, and the listener stopped while a transaction's events arrive.
  const l = await listening(t, { rcvbufBytes: 4096 });
  process.kill(l.pid, 'SIGSTOP');
  const resume = () => { try { process.kill(l.pid, 'SIGCONT'); } catch { /* gone */ } };
  t.teardown(resume);
  const elements = Array.from({ length: 2000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`).join(', ');
  await l.nft(`add table ip big\nadd set ip big s { type ipv4_addr; }\nadd element ip big s { ${elements} }\n`);
  resume();
  await nsExec(l.ns, 'nft', ['add', 'table', 'ip', 'after']);
  const deadline = Date.now() + 10_000;
  while (!l.lines.includes('add table ip after 1') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.true(l.lines.includes('# lost events'), JSON.stringify(l.lines.slice(0, 10)));
  t.true(l.lines.includes('add table ip after 1'), 'events after the loss are read');
  const gens = l.lines.filter((x) => x.startsWith('# new generation '));
  t.true(gens.length >= 1, 'the generation after the loss came');
});

test('the listener ends when it is stopped, and leaves nothing running', async (t) => {
  requireKernelPrerequisites(tools);
  addon();
  const ns = await createNetns('kpxev');
  t.teardown(() => deleteNetns(ns));
  const cmd = listenerCommand(nftEventsAddonPath());
  const lines: string[] = [];
  const child = netnsExec(ns).stream!(cmd.tool, cmd.args, { onLine: (x) => lines.push(x) });
  const deadline = Date.now() + 10_000;
  while (!lines.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.regex(lines[0] ?? '', /^ready \d+$/);
  t.is((await import('node:fs')).readFileSync(`/proc/${child.pid}/comm`, 'utf8').trim(), 'kproxy-nfevents', 'it runs under a name of kproxy\'s');
  const exit = await child.stop();
  t.is(exit.signal, 'SIGTERM');
  const { stdout } = await (await import('./helpers/netns.ts')).run('/usr/sbin/ip', ['netns', 'pids', ns]);
  t.is(stdout.trim(), '');
});

/** One netlink message of subsystem nf_tables: header, nfgenmsg, attributes. */
function message(type: number, family: number, attrs: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([family, 0, 0, 0]), ...attrs]);
  const h = Buffer.alloc(16);
  h.writeUInt32LE(16 + body.length, 0);
  h.writeUInt16LE((10 << 8) | type, 4);
  return Buffer.concat([h, body]);
}

function attr(type: number, value: Buffer): Buffer {
  const len = 4 + value.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  value.copy(b, 4);
  return b;
}

const str = (s: string | Buffer): Buffer => Buffer.concat([Buffer.from(s), Buffer.from([0])]);
const be32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };

test('names are printed as one token whatever bytes they hold; malformed messages are skipped without a crash', (t) => {
  const a = addon();
  const newTable = 0;
  const newGen = 15;
  const odd = message(newTable, 2, [attr(1, str(Buffer.from('a b\n\\é')))]);
  const gen = message(newGen, 2, [attr(1, be32(7)), attr(2, be32(42)), attr(3, str('x)\ny'))]);
  t.is(a.format(Buffer.concat([odd, gen]), 8), 'add table ip a\\x20b\\x0a\\x5c\\xc3\\xa9 1\n# new generation 7 by process 42 (x)\\x0ay)\n');
  t.deepEqual(parseListenerEvent('add table ip a\\x20b\\x0a\\x5c\\xc3\\xa9 1')?.table, 'a b\n\\\xc3\xa9');
  // Every truncation of a real-looking message, and random bytes.
  const setelem = message(12, 2, [attr(1, str('kproxy')), attr(2, str('service-ips')), attr(3 | 0x8000, attr(1 | 0x8000, attr(1 | 0x8000, attr(1, Buffer.from('0a60000a0600000000500000', 'hex')))))]);
  t.is(a.format(setelem, 8), 'add element ip kproxy service-ips 1 0a60000a0600000000500000\n');
  for (let n = 0; n < setelem.length; n++) t.notThrows(() => a.format(setelem.subarray(0, n), 8));
  let seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 255;
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(Array.from({ length: 1 + (i % 200) }, rnd));
    if (b.length >= 6) b.writeUInt16LE((10 << 8) | (rnd() % 40), 4); // mostly nf_tables types
    if (b.length >= 4) b.writeUInt32LE(Math.min(b.length, 16 + (rnd() % 200)), 0);
    t.notThrows(() => a.format(b, 8));
  }
  t.throws(() => a.format('x' as unknown as Buffer, 8), { instanceOf: TypeError });
  t.throws(() => a.listen(-1), { instanceOf: TypeError });
});
