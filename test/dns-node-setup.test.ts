// Node set-up against the real kernel, inside network namespaces this test
// creates and deletes: listen addresses on the dummy interface (or lo when
// the kernel has no dummy driver), NOTRACK/ACCEPT rules, teardown. Then the
// whole `kproxy dns-cache` in a namespace, queried with dig.
import test from 'ava';
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { netnsExec, toolPath } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import { NodeSetup, notrackRules } from '../dns-cache/node-setup.ts';
import { createNetns, deleteNetns } from './helpers/netns.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

function requireTools(): void {
  if (process.getuid?.() !== 0) throw new Error('dns-node-setup tests need root (network namespaces)');
  for (const [tool, pkg] of [['ip', 'iproute2'], ['iptables', 'iptables'], ['dig', 'dnsutils']]) {
    try {
      accessSync(toolPath(tool), constants.X_OK);
    } catch {
      throw new Error(`${tool} not found: apt-get install ${pkg}`);
    }
  }
}

const listen = [{ host: '169.254.20.10', port: 53 }, { host: '10.96.0.10', port: 53 }];

test('set-up puts the listen addresses on the node with NOTRACK rules; teardown removes them', async (t) => {
  requireTools();
  const ns = await createNetns('kpdns');
  const exec = netnsExec(ns);
  try {
    const setup = new NodeSetup(exec, { interfaceName: 'nodelocaldns', addresses: listen, setupInterface: true, setupIptables: true }, silentLogger());
    await setup.setup();
    const links = (await exec('ip', ['-o', 'link', 'show'])).stdout;
    t.true(setup.device === 'lo' || links.includes('nodelocaldns'), `device ${setup.device}`);
    const addrs = (await exec('ip', ['-o', 'addr', 'show', 'dev', setup.device])).stdout;
    for (const a of listen) t.true(addrs.includes(`${a.host}/32`), addrs);
    const raw = (await exec('iptables', ['-w', '-t', 'raw', '-S'])).stdout;
    const filter = (await exec('iptables', ['-w', '-S'])).stdout;
    for (const a of listen) {
      for (const proto of ['udp', 'tcp']) {
        t.true(raw.includes(`-A PREROUTING -d ${a.host}/32 -p ${proto} -m ${proto} --dport 53 -m comment --comment "kproxy dns-cache" -j NOTRACK`), raw);
        t.true(raw.includes(`-A OUTPUT -s ${a.host}/32 -p ${proto} -m ${proto} --sport 53 -m comment --comment "kproxy dns-cache" -j NOTRACK`), raw);
        t.true(filter.includes(`-A INPUT -d ${a.host}/32 -p ${proto} -m ${proto} --dport 53 -m comment --comment "kproxy dns-cache" -j ACCEPT`), filter);
      }
    }
    t.is(raw.split('\n').filter((l) => l.includes('kproxy dns-cache')).length, listen.length * 6);
    t.is(await setup.ensureRules(), 0, 'ensureRules is idempotent');
    const r0 = notrackRules(listen[0])[0];
    await exec('iptables', ['-w', '-t', r0.table, '-D', r0.chain, ...r0.spec]);
    t.is(await setup.ensureRules(), 1, 'a flushed rule is put back');
    await setup.teardown();
    const rawAfter = (await exec('iptables', ['-w', '-t', 'raw', '-S'])).stdout;
    const filterAfter = (await exec('iptables', ['-w', '-S'])).stdout;
    t.false(rawAfter.includes('kproxy dns-cache'), rawAfter);
    t.false(filterAfter.includes('kproxy dns-cache'), filterAfter);
    const addrsAfter = (await exec('ip', ['-o', 'addr', 'show'])).stdout;
    for (const a of listen) t.false(addrsAfter.includes(`${a.host}/32`), addrsAfter);
  } finally {
    await deleteNetns(ns);
  }
});

test('kproxy dns-cache --listen 169.254.20.10:53 on a fresh node (a namespace) sets the node up by default: answers dig, cleans up on SIGTERM unless --skip-teardown; with set-up turned off it cannot bind', async (t) => {
  requireTools();
  const ns = await createNetns('kpdns');
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-dns-ns-'));
  const script = join(dir, 'run.ts');
  // One process in the namespace: the "kube-dns" test server and the cache.
  writeFileSync(script, `
import { TestDnsServer } from ${JSON.stringify(join(repo, 'test/helpers/dns-server.ts'))};
import { runDnsCache } from ${JSON.stringify(join(repo, 'dns-cache/main.ts'))};
const up = await TestDnsServer.start({ zone: 'cluster.local', port: 5353, records: { 'web.default.svc.cluster.local': [{ type: 'A', data: '10.96.7.7', ttl: 30 }] } });
// No set-up flags: the addresses and the NOTRACK rules are the defaults (NodeLocal DNSCache's).
const code = await runDnsCache(['--listen', '169.254.20.10:53', '--zone', 'cluster.local=127.0.0.1:5353',
  '--health-addr', '169.254.20.10:8080', '--metrics-addr', '169.254.20.10:9253', ...process.argv.slice(2)]);
await up.stop();
process.exit(code);
`);
  const exec = netnsExec(ns);
  const run = async (extra: string[]): Promise<{ log: string; code: number | null }> => {
    const child = spawn(toolPath('ip'), ['netns', 'exec', ns, process.execPath, script, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d: Buffer) => { log += d.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const until = Date.now() + 15_000;
    while (!log.includes('dns-cache serving') && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    t.true(log.includes('dns-cache serving'), log);
    const dig = await exec('dig', ['+short', '+time=2', '+tries=1', '@169.254.20.10', 'web.default.svc.cluster.local', 'A']);
    t.is(dig.stdout.trim(), '10.96.7.7');
    const digTcp = await exec('dig', ['+short', '+tcp', '+time=2', '+tries=1', '@169.254.20.10', 'web.default.svc.cluster.local', 'A']);
    t.is(digTcp.stdout.trim(), '10.96.7.7');
    const health = await exec(process.execPath, ['-e', "fetch('http://169.254.20.10:8080/health').then((r) => r.text()).then((b) => process.stdout.write(b))"]);
    t.is(health.stdout.trim(), 'OK');
    child.kill('SIGTERM');
    return { log, code: await exited };
  };
  try {
    const first = await run([]);
    t.is(first.code, 0, first.log);
    if (first.log.includes('no dummy interface driver')) t.log('this kernel has no dummy driver: addresses went on lo (logged)');
    t.false((await exec('ip', ['-o', 'addr', 'show'])).stdout.includes('169.254.20.10'), 'address removed on exit');
    t.false((await exec('iptables', ['-w', '-t', 'raw', '-S'])).stdout.includes('kproxy dns-cache'), 'rules removed on exit');
    // Turned off, on a node without the address: a clear bind error, exit 1.
    const off = spawn(toolPath('ip'), ['netns', 'exec', ns, process.execPath, script, '--setup-interface=false', '--setup-iptables=false'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let offLog = '';
    off.stderr.on('data', (d: Buffer) => { offLog += d.toString(); });
    const offCode = await new Promise<number | null>((r) => off.on('exit', (c) => r(c)));
    t.is(offCode, 1, offLog);
    t.regex(offLog, /cannot listen on udp 169\.254\.20\.10:53/);
    t.false((await exec('iptables', ['-w', '-t', 'raw', '-S'])).stdout.includes('kproxy dns-cache'), 'no rules when turned off');
    const second = await run(['--skip-teardown']);
    t.is(second.code, 0, second.log);
    t.true((await exec('ip', ['-o', 'addr', 'show'])).stdout.includes('169.254.20.10'), '--skip-teardown keeps the address');
    t.true((await exec('iptables', ['-w', '-t', 'raw', '-S'])).stdout.includes('kproxy dns-cache'), '--skip-teardown keeps the rules');
  } finally {
    await deleteNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loopback listen addresses are left alone: no interface, no rules, nothing to tear down', async (t) => {
  const calls: string[] = [];
  const exec = async (tool: string, args: readonly string[]): Promise<{ stdout: string; stderr: string }> => {
    calls.push(`${tool} ${args.join(' ')}`);
    return { stdout: '', stderr: '' };
  };
  const setup = new NodeSetup(exec as never, {
    interfaceName: 'nodelocaldns', addresses: [{ host: '127.0.0.1', port: 53 }, { host: '::1', port: 53 }], setupInterface: true, setupIptables: true,
  }, silentLogger());
  await setup.setup();
  t.is(await setup.ensureRules(), 0);
  await setup.teardown();
  t.deepEqual(calls, []);
});
