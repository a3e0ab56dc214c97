// The real `kproxy` binary as an operator runs it: exit codes, the one
// error listing every problem, dump and explain of a YAML cluster file.
import test from 'ava';
import { runStatus } from './helpers/netns.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../bin/kproxy.js', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/proxy/cluster.yaml', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'kproxy-cli-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function kproxy(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // Node 24 from node_modules (the checkout's `node`), as `npx kproxy` would use.
  return runStatus(process.execPath, [bin, ...args], undefined, { ...process.env, KPROXY_LOG_LEVEL: 'warn' });
}

const dumpArgs = (mode: string, node = 'node-a') => ['dump', '--proxy-mode', mode, '--source-file', fixture, '--hostname-override', node];

test('bad flags: exit 2 and one message listing every problem', async (t) => {
  const r = await kproxy(['--proxy-mode', 'kernelspace', '--iptables-sync-period', '30', '--cluster-cidr', '10.0.0.0/99', '--metrics-bind-address', 'nowhere', '--frobnicate']);
  t.is(r.code, 2);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^kproxy: KPROXY_BAD_CONFIG: invalid flags or configuration \(5 problems\):\n/);
  for (const want of [
    '  - unknown flag --frobnicate',
    '  - --proxy-mode: proxy mode "kernelspace" is not supported by kproxy (supported: iptables, nftables, ipvs, userspace)',
    '  - --iptables-sync-period: "30" is not a duration (e.g. 30s, 1m, 500ms)',
    '  - --cluster-cidr: "10.0.0.0/99" is not a valid CIDR',
    '  - --metrics-bind-address: "nowhere": expected IP:PORT',
  ]) t.true(r.stderr.includes(want + '\n'), `missing ${want}\n${r.stderr}`);
});

test('--help prints every flag and exits 0', async (t) => {
  const r = await kproxy(['--help']);
  t.is(r.code, 0);
  for (const f of ['--proxy-mode', '--config', '--kubeconfig', '--hostname-override', '--cluster-cidr', '--masquerade-all', '--nodeport-addresses',
    '--iptables-sync-period', '--iptables-min-sync-period', '--ipvs-scheduler', '--metrics-bind-address', '--healthz-bind-address', '--cleanup', '--source-file']) {
    t.true(r.stdout.includes(f), f);
  }
});

for (const mode of ['iptables', 'nftables']) {
  test(`dump --proxy-mode ${mode} prints the rules for the file, for the named node, without root or kernel`, async (t) => {
    const a = await kproxy(dumpArgs(mode));
    t.is(a.code, 0, a.stderr);
    t.is(a.stderr, '');
    // The fixture's web Service (172.30.0.41:80) with its two ready endpoints, not the not-ready one.
    t.true(a.stdout.includes('172.30.0.41'), a.stdout.slice(0, 500));
    t.true(a.stdout.includes('10.180.0.4') && a.stdout.includes('10.180.1.5'));
    t.false(a.stdout.includes('10.180.2.6'), 'not-ready endpoint is not programmed');
    // Node-specific: np-local (externalTrafficPolicy Local) has a local endpoint on node-a only.
    const b = await kproxy(dumpArgs(mode, 'node-b'));
    t.is(b.code, 0, b.stderr);
    t.not(a.stdout, b.stdout, 'the view depends on --hostname-override');
  });
}

test('dump of a broken file: exit 1 with KPROXY_SOURCE_FAILED', async (t) => {
  const broken = join(dir, 'broken.yaml');
  writeFileSync(broken, 'apiVersion: v1\nkind: Service\nmetadata: {name: x\n');
  const r = await kproxy(['dump', '--source-file', broken, '--hostname-override', 'node-a']);
  t.is(r.code, 1);
  t.regex(r.stderr, /kproxy: KPROXY_SOURCE_FAILED: .*broken\.yaml/);
  t.is(r.stdout, '');
});

test('explain VIP:port through the CLI', async (t) => {
  const r = await kproxy(['explain', '--source-file', fixture, '--hostname-override', 'node-a', '172.30.0.41:80/TCP']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^default\/web:http TCP IPv4 \(ClusterIP\) — matched as clusterIP$/m);
  t.regex(r.stdout, /10\.180\.0\.4:8080 +node-a \(this node\) +ready/);
  t.regex(r.stdout, /10\.180\.2\.6:8080 +node-c +not ready/);
  t.regex(r.stdout, /iptables rules of this port \([1-9]\d* lines\):\n +\S/);
  const miss = await kproxy(['explain', '--source-file', fixture, '--hostname-override', 'node-a', '172.30.0.41:81']);
  t.is(miss.code, 1);
  t.regex(miss.stderr, /KPROXY_NOT_FOUND: no Service port is reached at 172\.30\.0\.41:81/);
  const bad = await kproxy(['explain', '--source-file', fixture, '--hostname-override', 'node-a', '172.30.0.41:99999']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /KPROXY_BAD_CONFIG: explain 172\.30\.0\.41:99999: port 99999 is not in 1-65535/);
});

test('dns-cache is delegated with its own flags and exit codes', async (t) => {
  const help = await kproxy(['dns-cache', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^usage: kproxy dns-cache/);
  const bad = await kproxy(['dns-cache', '--proxy-mode', 'iptables']);
  t.is(bad.code, 2, 'kproxy\'s own flags are not dns-cache flags');
  t.regex(bad.stderr, /unknown flag --proxy-mode/);
});
