// modes/nft-monitor.ts: parsing the event lines of kproxy's listener and of
// `nft monitor`, grouping changes by transaction, telling kproxy's own
// transactions from others' by process id, and reporting what may have
// been missed. Most cases drive a scripted stand-in with nft monitor's
// lines, some with the listener's; the last ones run the real listener and
// the real `nft monitor` in a network namespace.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { netnsExec } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import { NftMonitor, listenerEvent, parseEvent, parseTrailer, subscribedToNftables, type NftEventSource, type NftGeneration, type NftMonitorListener } from '../modes/nft-monitor.ts';
import { createNetns, deleteNetns, nsExec, requireKernelPrerequisites } from './helpers/netns.ts';
import { fakeStream } from './helpers/fake-stream.ts';

const noKernel = async (): Promise<never> => { throw new Error('no kernel here'); };

function recorder() {
  const got = { foreign: [] as NftGeneration[], ready: [] as boolean[], blind: [] as string[], ownLoss: 0, unattributable: 0, probes: 0 };
  const listener: NftMonitorListener = {
    onForeign: (g) => got.foreign.push(g),
    onReady: (r) => got.ready.push(r),
    onBlind: (w) => got.blind.push(w),
    onOwnLoss: () => { got.ownLoss++; },
    onUnattributable: () => { got.unattributable++; },
    onProbe: () => { got.probes++; },
  };
  return { got, listener };
}

async function started(watches = (f: string, t: string) => f === 'ip' && t === 'kproxy', namedSets = false, minBlindIntervalMs = 0, source: NftEventSource = 'nft monitor') {
  const stream = fakeStream(noKernel);
  const { got, listener } = recorder();
  const monitor = new NftMonitor({ exec: stream.exec, log: silentLogger(), watches, listener, initialRetryMs: 10, maxRetryMs: 20, namedSets, minBlindIntervalMs, source });
  monitor.start();
  await monitor.ready;
  return { stream, got, monitor };
}

test('lines parse into events and generation lines', (t) => {
  t.deepEqual(parseEvent('delete rule ip kproxy services handle 7'), { verb: 'delete', object: 'rule', family: 'ip', table: 'kproxy', name: 'services', rest: 'handle 7' });
  t.deepEqual(parseEvent('add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : goto cluster-3 }'),
    { verb: 'add', object: 'element', family: 'ip', table: 'kproxy', name: 'service-ips', rest: '{ 10.96.0.10 . tcp . 80 : goto cluster-3 }' });
  t.deepEqual(parseEvent('delete table ip kproxy'), { verb: 'delete', object: 'table', family: 'ip', table: 'kproxy', name: '', rest: '' });
  t.deepEqual(parseEvent('create chain ip nat FOO'), { verb: 'create', object: 'chain', family: 'ip', table: 'nat', name: 'FOO', rest: '' });
  t.is(parseEvent('# new generation 3 by process 8077 (nft)'), undefined);
  t.is(parseEvent('garbage'), undefined);
  t.deepEqual(parseTrailer('# new generation 3 by process 8077 (nft)'), { id: 3, pid: 8077, comm: 'nft' });
  t.deepEqual(parseTrailer('# new generation 12 by process 20809 (iptables-nft-re)'), { id: 12, pid: 20809, comm: 'iptables-nft-re' });
});

test('a foreign transaction in a watched table is reported with its process; own ones and other tables are not', async (t) => {
  const { stream, got, monitor } = await started();
  t.teardown(() => monitor.stop());
  t.deepEqual(got.ready, [false]);
  t.true(monitor.watching);
  stream.children.started(500, '/usr/sbin/nft');
  stream.emit('add element ip kproxy m { 1.2.3.4 : drop }', 'add rule ip nat FOO return', '# new generation 7 by process 500 (nft)');
  stream.emit('add rule ip nat FOO return', '# new generation 8 by process 600 (iptables)');
  t.deepEqual(got.foreign, [], 'own, or not in a watched table');
  stream.emit('delete rule ip kproxy services handle 7', 'delete element ip kproxy m { 1.2.3.4 : drop }', '# new generation 9 by process 601 (nft)');
  t.is(got.foreign.length, 1);
  t.like(got.foreign[0], { id: 9, pid: 601, comm: 'nft' });
  t.deepEqual(got.foreign[0].events.map((e) => `${e.verb} ${e.object} ${e.name}`), ['delete rule services', 'delete element m']);
  t.deepEqual(got.blind, []);
});

test('dropped events: a gap in generation numbers that kproxy\'s own unseen transactions account for is its own; one they do not is a blind spot', async (t) => {
  const { stream, got, monitor } = await started();
  t.teardown(() => monitor.stop());
  const nftF = (pid: number): void => stream.children.started(pid, '/usr/sbin/nft', ['-f', '-']);
  stream.emit('# new generation 1 by process 700 (nft)');
  // kproxy's large transaction (generation 2) overflows: part of its lines arrive, its generation line does not.
  nftF(800);
  stream.emit('add element ip kproxy m { 1.2.3.4 : drop }', 'add element ip kproxy m { 1.2.3.5 : drop }', '# ERROR: We lost some netlink events!');
  t.is(got.probes, 1, 'a probe is asked for');
  nftF(801);
  stream.emit('add map ip kproxy m { type ipv4_addr : verdict; }', '# new generation 3 by process 801 (nft)');
  t.is(got.ownLoss, 1);
  t.deepEqual(got.blind, [], 'generation 2 was kproxy\'s own');
  t.deepEqual(got.foreign, []);

  // Another overflow of kproxy's (generation 4), and someone else's transaction lost with it (5).
  nftF(802);
  stream.emit('# ERROR: We lost some netlink events!');
  nftF(803);
  stream.emit('# new generation 6 by process 803 (nft)');
  t.deepEqual(got.blind, ['nf_tables generations 4..5 were not seen, not all of them kproxy\'s own']);

  // kproxy's generation 7 lost, the rest of its lines read after the loss line, then its probe (8): all its own.
  nftF(804);
  stream.emit('add element ip kproxy m { 1.2.3.6 : drop }', '# ERROR: We lost some netlink events!', 'add element ip kproxy m { 1.2.3.7 : drop }');
  nftF(805);
  stream.emit('add map ip kproxy m { type ipv4_addr : verdict; }', '# new generation 8 by process 805 (nft)');
  t.is(got.blind.length, 1);
  // Then someone else's change, read in full: reported.
  stream.emit('delete rule ip kproxy services handle 7', '# new generation 9 by process 705 (nft)');
  t.deepEqual(got.foreign.map((g) => [g.id, g.events.length]), [[9, 1]]);

  // kproxy's generation 10 lost and someone's 11 read before any generation line of kproxy's: its lines may be kproxy's.
  nftF(806);
  stream.emit('add element ip kproxy m { 1.2.3.8 : drop }', 'delete rule ip kproxy services handle 8', '# new generation 11 by process 706 (nft)');
  t.is(got.blind.at(-1), 'changes by nft (pid 706) came mixed with dropped ones of kproxy\'s own');
  t.is(got.foreign.length, 1);

  // Someone's transaction (12) whose first lines came before a loss line: partly dropped.
  stream.emit('delete rule ip kproxy services handle 9', '# ERROR: We lost some netlink events!', 'delete rule ip kproxy services handle 10', '# new generation 12 by process 707 (nft)');
  t.is(got.blind.at(-1), 'changes by nft (pid 707) were partly dropped');
});

test('blind spots close together are reported once the interval has passed, as one', async (t) => {
  const { stream, got, monitor } = await started(undefined, false, 300);
  t.teardown(() => monitor.stop());
  stream.emit('# new generation 1 by process 700 (nft)', '# new generation 3 by process 700 (nft)');
  t.is(got.blind.length, 1);
  stream.emit('# new generation 5 by process 700 (nft)', '# new generation 7 by process 700 (nft)');
  t.is(got.blind.length, 1, 'held back');
  await new Promise((r) => setTimeout(r, 500));
  t.deepEqual(got.blind, ['nf_tables generations 2..2 were not seen, not all of them kproxy\'s own', 'nf_tables generations 4..4 were not seen, not all of them kproxy\'s own']);
});

test('a foreign nft transaction while kproxy\'s own nft runs, before any own one was seen, is held until attribution is shown to work', async (t) => {
  const { stream, got, monitor } = await started();
  t.teardown(() => monitor.stop());
  stream.children.started(900, '/usr/sbin/nft');
  stream.emit('delete rule ip kproxy services handle 7', '# new generation 3 by process 12345 (nft)');
  t.deepEqual(got.foreign, [], 'held');
  stream.emit('add rule ip kproxy services return', '# new generation 4 by process 900 (nft)');
  t.deepEqual(got.foreign.map((g) => g.pid), [12345], 'released once an own transaction was recognised');
  t.true(monitor.watching);
});

test('an element change nft could not name is a blind spot while a set may be forgotten (a rule using it was deleted), not after the sets were declared again', async (t) => {
  const { stream, got, monitor } = await started(undefined, true);
  t.teardown(() => monitor.stop());
  const unknown = 'W: Received event for an unknown set.';
  stream.emit(unknown, '# new generation 1 by process 700 (nft)');
  t.deepEqual(got.blind, [], 'nothing of ours was touched: another table\'s set');
  stream.emit('delete rule ip kproxy cluster-3 handle 4', '# new generation 2 by process 701 (nft)');
  t.is(got.foreign.length, 1);
  stream.emit(unknown, '# new generation 3 by process 702 (nft)');
  t.deepEqual(got.blind, ['nft monitor could not name the set of 1 element change by nft (pid 702)']);
  stream.children.started(800, '/usr/sbin/nft');
  stream.emit('flush chain ip kproxy cluster-3', 'add map ip kproxy endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport; }', '# new generation 4 by process 800 (nft)');
  stream.emit(unknown, '# new generation 5 by process 703 (nft)');
  t.is(got.blind.length, 1, 'declared again by kproxy: known again');
  stream.emit('delete rule ip kproxy services handle 9', unknown, '# new generation 6 by process 704 (nft)');
  t.is(got.blind.length, 2, 'in a transaction that touched kproxy\'s table');
});

test('the monitor is started again after it ends, and says so', async (t) => {
  const { stream, got, monitor } = await started();
  t.teardown(() => monitor.stop());
  stream.crash();
  const deadline = Date.now() + 3000;
  while (got.ready.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(got.ready, [false, true]);
  t.is(monitor.starts, 2);
  await monitor.stop();
  t.false(stream.running);
});

test('kproxy\'s own tools are known by their name too, where the kernel reports process ids kproxy cannot see', async (t) => {
  const { stream, got, monitor } = await started();
  t.teardown(() => monitor.stop());
  stream.children.started(900, '/tmp/kproxy-tools-x/kproxy-nft', ['-f', '-']);
  stream.emit('add rule ip kproxy services return', '# new generation 3 by process 4000000 (kproxy-nft)');
  stream.emit('add rule ip kproxy services return', '# new generation 4 by process 4000001 (kproxy-nft)');
  t.deepEqual(got.foreign, []);
  t.is(got.unattributable, 0);
  t.true(monitor.watching);
  stream.emit('delete rule ip kproxy services handle 3', '# new generation 5 by process 4000002 (nft)');
  t.is(got.foreign.length, 1, 'an operator\'s nft is someone else');
});

test('own transactions named with process ids kproxy never started: the monitor gives up rather than repair its own syncs', async (t) => {
  const { stream, got, monitor } = await started();
  t.teardown(() => monitor.stop());
  // kproxy's own nft runs (pid 900 here) and the kernel names pid 12345, twice.
  stream.children.started(900, '/usr/sbin/nft');
  stream.emit('add rule ip kproxy services return', '# new generation 3 by process 12345 (nft)');
  t.is(got.unattributable, 0);
  stream.children.started(901, '/usr/sbin/nft');
  stream.emit('add rule ip kproxy services return', '# new generation 4 by process 12346 (nft)');
  t.is(got.unattributable, 1);
  t.deepEqual(got.foreign, []);
  t.false(monitor.watching);
});

test('a real nft monitor in a network namespace: ready once subscribed, sees a foreign change with its pid, not kproxy\'s own', async (t) => {
  requireKernelPrerequisites([{ tool: 'ip', pkg: 'iproute2' }, { tool: 'nft', pkg: 'nftables' }]);
  const ns = await createNetns('kpxmon');
  t.teardown(() => deleteNetns(ns));
  const exec = netnsExec(ns);
  const { got, listener } = recorder();
  const monitor = new NftMonitor({ exec, log: silentLogger(), watches: (f, tb) => f === 'ip' && tb === 'kproxy', listener, source: 'nft monitor' });
  t.teardown(() => monitor.stop());
  monitor.start();
  await monitor.ready;
  t.true(monitor.watching);
  t.true(subscribedToNftables(monitor.pid!));
  t.false(subscribedToNftables(process.pid), 'this test process holds no such socket');
  await exec('/usr/sbin/nft', ['-f', '-'], 'add table ip kproxy\nadd chain ip kproxy c\nadd rule ip kproxy c return\n');
  await nsExec(ns, '/usr/sbin/nft', ['flush', 'chain', 'ip', 'kproxy', 'c']);
  const deadline = Date.now() + 5000;
  while (got.foreign.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(got.foreign.length, 1, 'the flush only');
  t.is(got.foreign[0].comm, 'nft');
  t.deepEqual(got.foreign[0].events.map((e) => `${e.verb} ${e.object} ${e.name}`), ['delete rule c']);
  await monitor.stop();
  t.false(monitor.watching);
});

test('the listener\'s lines: runs of a foreign transaction become events with their counts and keys; own ones are not reported; a loss is accounted as with nft monitor', async (t) => {
  const { stream, got, monitor } = await started(undefined, false, 0, 'listener');
  t.teardown(() => monitor.stop());
  t.is(monitor.source, 'listener');
  stream.children.started(500, '/usr/sbin/nft', ['-f', '-']);
  stream.emit('add element ip kproxy endpoints-tcp 110000', 'add rule ip nat FOO 1', '# new generation 7 by process 500 (nft)');
  t.deepEqual(got.foreign, []);
  stream.emit('delete rule ip kproxy cluster-3 2', 'delete element ip kproxy service-ips 1 0a60000a0600000000500000', 'delete element ip kproxy endpoints-tcp 900',
    'add table ip other 1', '# new generation 8 by process 601 (nft)');
  t.is(got.foreign.length, 1);
  t.deepEqual(got.foreign[0].events.map((e) => [e.verb, e.object, e.name, e.count, e.keys]), [
    ['delete', 'rule', 'cluster-3', 2, undefined],
    ['delete', 'element', 'service-ips', 1, ['0a60000a0600000000500000']],
    ['delete', 'element', 'endpoints-tcp', 900, undefined],
  ]);
  // kproxy's transaction 9 lost with someone's 10: a blind spot; a later loss of its own alone is not.
  stream.children.started(501, '/usr/sbin/nft', ['-f', '-']);
  stream.emit('add element ip kproxy endpoints-tcp 500', '# lost events');
  t.is(got.probes, 1);
  stream.children.started(502, '/usr/sbin/nft', ['-f', '-']);
  stream.emit('add set ip kproxy service-ips 1', '# new generation 11 by process 502 (nft)');
  t.deepEqual(got.blind, ['nf_tables generations 9..10 were not seen, not all of them kproxy\'s own']);
  stream.children.started(503, '/usr/sbin/nft', ['-f', '-']);
  stream.emit('# lost events');
  stream.children.started(504, '/usr/sbin/nft', ['-f', '-']);
  stream.emit('# new generation 13 by process 504 (nft)');
  t.is(got.ownLoss, 1);
  t.is(got.blind.length, 1);
  t.deepEqual(listenerEvent('add table ip kproxy 1'), { verb: 'add', object: 'table', family: 'ip', table: 'kproxy', name: '', count: 1, rest: '' });
  t.like(listenerEvent('add element ip kproxy m 2 aa'), { count: 2, keys: undefined }, 'keys that do not match the count are not used');
  t.is(listenerEvent('add element ip kproxy m'), undefined);
  t.is(listenerEvent('add element ip kproxy m x'), undefined);
  t.is(listenerEvent('# new generation 3 by process 8077 (nft)'), undefined);
});

test('the real listener through the monitor: ready when it says so, a foreign change reported with its process, kproxy\'s own not; its stopped reader loses events, and the probe after shows whose they were', async (t) => {
  requireKernelPrerequisites([{ tool: 'ip', pkg: 'iproute2' }, { tool: 'nft', pkg: 'nftables' }]);
  const ns = await createNetns('kpxmon');
  t.teardown(() => deleteNetns(ns));
  const exec = netnsExec(ns);
  const { got, listener } = recorder();
  // The probe, as the nftables mode makes it: a set declared again (a transaction that changes nothing).
  listener.onProbe = () => { got.probes++; void exec('/usr/sbin/nft', ['-f', '-'], 'add set ip kproxy s { type ipv4_addr; }\n').catch(() => undefined); };
  const monitor = new NftMonitor({ exec, log: silentLogger(), watches: (f, tb) => f === 'ip' && tb === 'kproxy', listener, source: 'listener', listenerOptions: { rcvbufBytes: 4096 }, minBlindIntervalMs: 0 });
  t.teardown(() => monitor.stop());
  monitor.start();
  await monitor.ready;
  t.true(monitor.watching);
  t.is(readFileSync(`/proc/${monitor.pid}/comm`, 'utf8').trim(), 'kproxy-nfevents');
  await exec('/usr/sbin/nft', ['-f', '-'], 'add table ip kproxy\nadd chain ip kproxy c\nadd rule ip kproxy c return\nadd set ip kproxy s { type ipv4_addr; }\nadd element ip kproxy s { 10.0.0.1, 10.0.0.2 }\n');
  await nsExec(ns, '/usr/sbin/nft', ['flush', 'chain', 'ip', 'kproxy', 'c']);
  await nsExec(ns, '/usr/sbin/nft', ['delete', 'element', 'ip', 'kproxy', 's', '{ 10.0.0.2 }']);
  const until = async (done: () => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  };
  await until(() => got.foreign.length >= 2);
  t.deepEqual(got.foreign.map((g) => [g.comm, g.events.map((e) => `${e.verb} ${e.object} ${e.name} ${e.count} ${e.keys ?? ''}`)]), [
    ['nft', ['delete rule c 1 ']],
    ['nft', ['delete element s 1 0a000002']],
  ]);

  // Its reader stopped while kproxy's own large transaction and someone else's small one arrive.
  process.kill(monitor.pid!, 'SIGSTOP');
  const resume = (): void => { try { process.kill(monitor.pid!, 'SIGCONT'); } catch { /* gone */ } };
  t.teardown(resume);
  const elements = Array.from({ length: 3000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`).join(', ');
  await exec('/usr/sbin/nft', ['-f', '-'], `add element ip kproxy s { ${elements} }\n`);
  await nsExec(ns, '/usr/sbin/nft', ['add', 'rule', 'ip', 'kproxy', 'c', 'return']);
  resume();
  await until(() => got.blind.length > 0);
  t.true(got.probes >= 1, 'a probe was made once the loss was read');
  t.deepEqual(got.blind.map((b) => b.replace(/\d+\.\.\d+/, 'N..M')), ['nf_tables generations N..M were not seen, not all of them kproxy\'s own']);

  // Then only kproxy's own transaction is lost: accounted as its own, no blind spot.
  const probes = got.probes;
  process.kill(monitor.pid!, 'SIGSTOP');
  await exec('/usr/sbin/nft', ['-f', '-'], `delete element ip kproxy s { ${elements} }\n`);
  resume();
  await until(() => got.ownLoss > 0);
  t.is(got.ownLoss, 1);
  t.true(got.probes > probes);
  t.is(got.blind.length, 1);
});
