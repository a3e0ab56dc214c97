// The e2e harness checked on its own, against hand-written iptables and nft
// rules: if these fail, a kernel-modes failure says nothing about kproxy.
import test from 'ava';
import { createSandbox, nsExec, requireKernelPrerequisites, requiredTools, run, sweepLeftovers } from '../helpers/netns.ts';
import { connectMany, openUdpSession, startBackends } from '../helpers/traffic.ts';
import { toolPath } from '../../lib/exec.ts';

const listNamespaces = async () => (await run(toolPath('ip'), ['netns', 'list'])).stdout;

test('a missing kernel tool fails with the Debian package to install', (t) => {
  t.notThrows(() => requireKernelPrerequisites(), 'this machine has every tool');
  const err = t.throws(() => requireKernelPrerequisites([...requiredTools, { tool: 'kproxy-no-such-tool', pkg: 'kproxy-test-pkg' }]));
  t.regex(err?.message ?? '', /missing tools: kproxy-no-such-tool; install them with: apt-get install -y kproxy-test-pkg/);
});

test('a sandbox is removed on destroy, and a sweep removes leftovers of dead runs only', async (t) => {
  const sandbox = await createSandbox();
  t.teardown(() => sandbox.destroy());
  for (const ns of sandbox.namespaces) t.true((await listNamespaces()).includes(ns), `${ns} exists`);
  await startBackends(sandbox.pods, { tcp: [8080] });
  await sandbox.destroy();
  for (const ns of sandbox.namespaces) t.false((await listNamespaces()).includes(ns), `${ns} removed with its processes`);

  // A pid far above any live one stands for a crashed run.
  const stale = 'kpt4194300-dead00-node';
  await run(toolPath('ip'), ['netns', 'add', stale]);
  t.teardown(() => run(toolPath('ip'), ['netns', 'del', stale]).catch(() => undefined));
  const live = await createSandbox();
  t.teardown(() => live.destroy());
  t.false((await listNamespaces()).includes(stale), 'leftover removed at start-up');
  t.deepEqual(await sweepLeftovers('kpt'), [], 'live sandboxes are not swept');
  t.true((await listNamespaces()).includes(live.node));
});

test('iptables: statistic DNAT spreads, REJECT is refused at once, UDP flows follow conntrack', async (t) => {
  const sandbox = await createSandbox();
  t.teardown(() => sandbox.destroy());
  await startBackends(sandbox.pods, { tcp: [8080], udp: [5353] });
  await nsExec(sandbox.node, 'iptables-restore', ['--noflush'], [
    '*nat',
    ':SVC - [0:0]',
    '-A PREROUTING -d 10.96.0.10/32 -p tcp --dport 80 -j SVC',
    '-A OUTPUT -d 10.96.0.10/32 -p tcp --dport 80 -j SVC',
    '-A SVC -p tcp -m statistic --mode random --probability 0.33333 -j DNAT --to-destination 10.180.0.11:8080',
    '-A SVC -p tcp -m statistic --mode random --probability 0.5 -j DNAT --to-destination 10.180.0.12:8080',
    '-A SVC -p tcp -j DNAT --to-destination 10.180.0.13:8080',
    '-A PREROUTING -d 10.96.0.53/32 -p udp --dport 53 -j DNAT --to-destination 10.180.0.11:5353',
    'COMMIT',
    '*filter',
    '-A FORWARD -d 10.96.0.20/32 -p tcp -j REJECT',
    'COMMIT',
    '',
  ].join('\n'));

  const spread = await connectMany(sandbox.client, '10.96.0.10', 80, { count: 300 });
  t.is(spread.answered, 300);
  t.deepEqual(Object.keys(spread.byBackend).sort(), ['pod-1', 'pod-2', 'pod-3']);
  const local = await connectMany(sandbox.node, '10.96.0.10', 80, { count: 20 });
  t.is(local.answered, 20, 'nat OUTPUT path from the node');

  const refused = await connectMany(sandbox.client, '10.96.0.20', 80, { count: 20 });
  t.is(refused.refused, 20, JSON.stringify(refused));
  t.true(refused.maxAttemptMs < 500);
  const silent = await connectMany(sandbox.client, '10.96.0.21', 80, { count: 2, timeoutMs: 300 });
  t.is(silent.timedOut, 2, 'no rule and no route: a timeout, told apart from a refusal');

  const session = await openUdpSession(sandbox.client, '10.96.0.53', 53);
  t.teardown(() => session.close());
  t.deepEqual(await session.ask(), { kind: 'ok', answer: 'pod-1' });
  await nsExec(sandbox.node, 'iptables', ['-t', 'nat', '-R', 'PREROUTING', '2', '-d', '10.96.0.53/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', '10.180.0.12:5353']);
  t.is((await session.ask()).answer, 'pod-1', 'an established UDP flow keeps its endpoint until its conntrack entry goes');
  await nsExec(sandbox.node, 'conntrack', ['-D', '-p', 'udp', '--orig-dst', '10.96.0.53', '--dst-nat', '10.180.0.11']);
  t.is((await session.ask()).answer, 'pod-2', 'deleting the entry moves the flow');
});

test('nftables: numgen DNAT spreads and reject is refused at once', async (t) => {
  const sandbox = await createSandbox();
  t.teardown(() => sandbox.destroy());
  await startBackends(sandbox.pods, { tcp: [8080] });
  await nsExec(sandbox.node, 'nft', ['-f', '-'], [
    'table ip harness {',
    '  chain prerouting_svc { type nat hook prerouting priority dstnat; policy accept;',
    '    ip daddr 10.96.0.10 tcp dport 80 dnat to numgen random mod 3 map { 0 : 10.180.0.11, 1 : 10.180.0.12, 2 : 10.180.0.13 } : 8080',
    '  }',
    '  chain forward_svc { type filter hook forward priority filter; policy accept;',
    '    ip daddr 10.96.0.20 tcp dport 80 reject with tcp reset',
    '  }',
    '}',
    '',
  ].join('\n'));
  const spread = await connectMany(sandbox.client, '10.96.0.10', 80, { count: 300 });
  t.is(spread.answered, 300);
  for (const pod of ['pod-1', 'pod-2', 'pod-3']) t.true((spread.byBackend[pod] ?? 0) >= 60, JSON.stringify(spread.byBackend));
  const refused = await connectMany(sandbox.client, '10.96.0.20', 80, { count: 20 });
  t.is(refused.refused, 20, JSON.stringify(refused));
});
