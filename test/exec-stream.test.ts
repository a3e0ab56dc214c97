// lib/exec.ts: the long-lived tool read line by line, the record of the
// processes an Exec started, and lib/supervisor.ts restarting a tool that
// ended. Real processes (sh), no root.
import test from 'ava';
import { lstatSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChildLog, commOf, hostExec, type StreamExit } from '../lib/exec.ts';
import { Supervisor } from '../lib/supervisor.ts';

test('stream: every stdout line in order, a last line without newline, stderr apart, and the exit', async (t) => {
  const lines: string[] = [];
  let stderr = '';
  const child = hostExec.stream!('sh', ['-c', 'printf "a\\nb\\n"; printf "é😀\\nlast"; echo oops >&2; exit 3'], {
    onLine: (l) => lines.push(l),
    onStderr: (s) => { stderr += s; },
  });
  t.true(typeof child.pid === 'number');
  const exit = await child.exited;
  t.deepEqual(exit, { code: 3, signal: null });
  t.deepEqual(lines, ['a', 'b', 'é😀', 'last']);
  t.is(stderr, 'oops\n');
});

test('stream: stop() ends a tool that runs on, with SIGKILL when SIGTERM is ignored', async (t) => {
  const lines: string[] = [];
  const child = hostExec.stream!('sh', ['-c', 'trap "" TERM; echo up; while :; do sleep 0.05; done'], { onLine: (l) => lines.push(l) });
  while (lines.length === 0) await new Promise((r) => setTimeout(r, 10));
  const t0 = Date.now();
  const exit: StreamExit = await child.stop(300);
  t.is(exit.signal, 'SIGKILL');
  t.true(Date.now() - t0 < 3000);
  t.deepEqual(await child.stop(), exit, 'stopping twice is harmless');
});

test('stream: a tool that is not installed ends with an error, not an exception', async (t) => {
  const child = hostExec.stream!('/nonexistent/kproxy-no-such-tool', [], { onLine: () => undefined });
  const exit = await child.exited;
  t.regex(exit.error ?? '', /ENOENT/);
});

test.serial('an Exec remembers the tools it started, for a while after they ended', async (t) => {
  const before = hostExec.children!.recent(60_000).length;
  await hostExec('sh', ['-c', 'true']);
  const mine = hostExec.children!.recent(60_000);
  t.true(mine.length > before);
  const last = mine.at(-1)!;
  t.is(last.comm, 'sh');
  t.true(hostExec.children!.has(last.pid));
  t.false(hostExec.children!.has(1), 'init is nobody kproxy started');

  let now = 0;
  const log = new ChildLog(1000, () => now);
  log.started(10, '/usr/sbin/iptables-nft-restore');
  t.is(log.recent(0)[0].comm, 'iptables-nft-re', 'the kernel cuts names to 15 bytes');
  now = 5000;
  t.true(log.has(10), 'alive: kept however long');
  log.ended(10);
  now = 5900;
  t.true(log.has(10));
  t.deepEqual(log.recent(500).map((r) => r.pid), []);
  now = 6100;
  t.false(log.has(10), 'forgotten keepMs after it ended (process ids are reused)');
  t.is(commOf('nft'), 'nft');
});

test('supervisor: restarts a tool that ends, with growing delays, resets after a stable run, and stops for good', async (t) => {
  const exits: number[] = [];
  let starts = 0;
  const sup = new Supervisor({
    start: () => {
      starts++;
      // The first three runs end at once; the fourth runs until stopped.
      return hostExec.stream!('sh', ['-c', starts < 4 ? 'exit 1' : 'exec sleep 30'], { onLine: () => undefined });
    },
    onExit: (_e, _ran, retryInMs) => exits.push(retryInMs),
    initialRetryMs: 20,
    maxRetryMs: 50,
    stableMs: 10_000,
  });
  sup.start();
  const deadline = Date.now() + 5000;
  while (starts < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.is(starts, 4);
  t.deepEqual(exits, [20, 40, 50], 'doubling up to the cap');
  const running = sup.current!;
  t.truthy(running.pid);
  await sup.stop();
  t.is((await running.exited).signal, 'SIGTERM');
  await new Promise((r) => setTimeout(r, 100));
  t.is(starts, 4, 'no restart after stop');
  t.is(sup.startCount, 4);

  // A run that lasted stableMs starts the delays over.
  const delays: number[] = [];
  let n = 0;
  const again = new Supervisor({
    start: () => { n++; return hostExec.stream!('sh', ['-c', 'exit 1'], { onLine: () => undefined }); },
    onExit: (_e, _ran, retryInMs) => delays.push(retryInMs),
    initialRetryMs: 20, maxRetryMs: 50, stableMs: 0,
  });
  again.start();
  while (n < 3) await new Promise((r) => setTimeout(r, 10));
  await again.stop();
  t.deepEqual(delays.slice(0, 2), [20, 20]);
});

test('stream with mergeStderr: stderr lines arrive in their place among stdout lines, and the process id is the tool\'s', async (t) => {
  const lines: string[] = [];
  const child = hostExec.stream!('sh', ['-c', 'echo one; echo warn >&2; echo two; echo $$'], { onLine: (l) => lines.push(l) }, { mergeStderr: true });
  await child.exited;
  t.deepEqual(lines.slice(0, 3), ['one', 'warn', 'two']);
  t.is(Number(lines[3]), child.pid ?? -1, 'sh -c exec: no extra process in between');
});

test.serial('on this host, nft and iptables-nft run under kproxy\'s own names (the kernel reports them so), and still work', async (t) => {
  const { stdout } = await hostExec('/usr/sbin/nft', ['--version']);
  t.regex(stdout, /^nftables v/);
  const nft = hostExec.children!.recent(60_000).at(-1)!;
  t.is(nft.comm, 'kproxy-nft');
  const ipt = await hostExec('iptables-nft-restore', ['--version']);
  t.regex(ipt.stdout + ipt.stderr, /iptables-nft-restore v1\.\d+/, 'the multi-call binary still knows what it is');
  t.is(hostExec.children!.recent(60_000).at(-1)!.comm, 'kproxy-iptr');
  t.is(commOf('/usr/sbin/ipset'), 'ipset');
  // One directory per user, shared by every kproxy process, closed to others.
  const dir = join(tmpdir(), `kproxy-tools-${process.getuid!()}`);
  const st = lstatSync(dir);
  t.true(st.isDirectory());
  t.is(st.mode & 0o777, 0o700);
  t.is(readlinkSync(join(dir, 'kproxy-nft')), '/usr/sbin/nft');
});
