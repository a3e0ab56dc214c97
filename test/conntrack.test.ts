// Stale UDP flow cleanup: the exact conntrack commands, error handling, and
// the real conntrack tool deleting real NATed flows in a network namespace.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { clearStaleUdp, staleUdpCommands } from '../modes/conntrack.ts';
import { netnsExec, ToolError, type Exec } from '../lib/exec.ts';
import { pino } from 'pino';
import { silentLogger } from '../lib/log.ts';
import type { Changes } from '../proxy/model.ts';

const changes: Changes = {
  full: false,
  services: new Set(),
  staleUdpEndpoints: [
    { family: 4, serviceIPs: ['172.30.0.10', '192.168.99.10'], servicePort: 53, nodePort: 30053, endpointIP: '10.180.0.53', endpointPort: 53 },
    { family: 6, serviceIPs: ['fd00:172::10'], servicePort: 53, nodePort: 0, endpointIP: 'fd00:180::53', endpointPort: 53 },
  ],
  staleUdpServiceIPs: [{ family: 4, ip: '172.30.0.11', port: 53 }, { family: 4, ip: '172.30.0.11', port: 53 }],
};

test('a UDP port that gets endpoints clears flows to its NodePort too (they met the REJECT)', (t) => {
  const withNodePort: Changes = { ...changes, staleUdpEndpoints: [], staleUdpServiceIPs: [{ family: 4, ip: '172.30.0.12', port: 53, nodePort: 30054 }] };
  t.deepEqual(staleUdpCommands(withNodePort).map((c) => c.join(' ')), [
    '-D -f ipv4 -p udp --orig-dst 172.30.0.12 --orig-port-dst 53',
    '-D -f ipv4 -p udp --orig-port-dst 30054',
  ]);
});

test('one conntrack -D per service IP, per NodePort, per newly served IP; duplicates dropped', (t) => {
  t.deepEqual(staleUdpCommands(changes).map((c) => c.join(' ')), [
    '-D -f ipv4 -p udp --orig-dst 172.30.0.11 --orig-port-dst 53',
    '-D -f ipv4 -p udp --orig-dst 172.30.0.10 --orig-port-dst 53 --dst-nat 10.180.0.53',
    '-D -f ipv4 -p udp --orig-dst 192.168.99.10 --orig-port-dst 53 --dst-nat 10.180.0.53',
    '-D -f ipv4 -p udp --orig-port-dst 30053 --dst-nat 10.180.0.53',
    '-D -f ipv6 -p udp --orig-dst fd00:172::10 --orig-port-dst 53 --dst-nat fd00:180::53',
  ]);
});

test('"0 flow entries deleted" (exit 1) is success; other failures are logged, never thrown', async (t) => {
  const seen: string[] = [];
  const exec: Exec = async (tool, args) => {
    seen.push(args.join(' '));
    if (args.includes('172.30.0.11')) throw new ToolError(tool, args, 1, 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n');
    if (args.includes('30053')) throw new ToolError(tool, args, 2, 'conntrack: Operation not permitted\n');
    return { stdout: '', stderr: '' };
  };
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(s) });
  await t.notThrowsAsync(clearStaleUdp(changes, exec, log));
  t.is(seen.length, 5);
  const warnings = lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40);
  t.is(warnings.length, 1);
  t.regex(warnings[0].args, /30053/);
});

test('nothing stale: no process is started', async (t) => {
  let calls = 0;
  await clearStaleUdp({ ...changes, staleUdpEndpoints: [], staleUdpServiceIPs: [] }, async () => {
    calls++;
    return { stdout: '', stderr: '' };
  }, silentLogger());
  t.is(calls, 0);
});

test('real conntrack: deletes exactly the NATed flows to the gone endpoint and the cached flows of a newly served IP', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('must run as root (it creates a network namespace)');
  for (const tool of ['/usr/sbin/conntrack', '/usr/sbin/iptables-nft', '/usr/sbin/ip']) {
    try {
      accessSync(tool, constants.X_OK);
    } catch {
      return t.fail(`${tool} is missing: apt-get install -y conntrack iptables iproute2`);
    }
  }
  const ns = `kpx-ct-${randomBytes(3).toString('hex')}`;
  const run = (...args: string[]): string => execFileSync('/usr/sbin/ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  execFileSync('/usr/sbin/ip', ['netns', 'add', ns]);
  try {
    run('/usr/sbin/ip', 'link', 'set', 'lo', 'up');
    run('/usr/sbin/ip', 'route', 'add', '172.30.0.0/16', 'dev', 'lo');
    run('/usr/sbin/ip', 'route', 'add', '10.180.0.0/16', 'dev', 'lo');
    // Flows through DNAT, as a Service's would be: to the ClusterIP, to a NodePort, to another endpoint.
    run('/usr/sbin/iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-d', '172.30.0.10/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', '10.180.0.53:53');
    run('/usr/sbin/iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-d', '172.30.0.12/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', '10.180.2.53:53');
    run('/usr/sbin/iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '30053', '-j', 'DNAT', '--to-destination', '10.180.0.53:53');
    run('/bin/bash', '-c', 'for d in 172.30.0.10/53 127.0.0.1/30053 172.30.0.11/53 172.30.0.12/53; do echo x > /dev/udp/${d%/*}/${d#*/}; done');
    const flows = (): string[] => run('/usr/sbin/conntrack', '-L', '-p', 'udp').trim().split('\n').map((l) => l.match(/dst=(\S+) sport=\d+ dport=(\d+)/)!.slice(1).join(':')).sort();
    t.deepEqual(flows(), ['127.0.0.1:30053', '172.30.0.10:53', '172.30.0.11:53', '172.30.0.12:53']);
    await clearStaleUdp(changes, netnsExec(ns), silentLogger());
    t.deepEqual(flows(), ['172.30.0.12:53'], 'only the flow to the endpoint still in service is left');
  } finally {
    execFileSync('/usr/sbin/ip', ['netns', 'del', ns]);
  }
});
