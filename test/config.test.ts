// Flags and KubeProxyConfiguration validation: every problem is found and
// listed in one error; good input gives a frozen config.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../proxy/config.ts';
import { ConfigError } from '../lib/errors.ts';
import { parseBindAddress, parseDuration } from '../proxy/flags.ts';

const dir = mkdtempSync(join(tmpdir(), 'kproxy-config-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(text: string): string {
  const p = join(dir, `c${n++}.yaml`);
  writeFileSync(p, text);
  return p;
}
const header = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

function problems(argv: string[]): readonly string[] {
  try {
    loadConfig(argv, { hostname: 'node-a' });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

test('defaults follow kube-proxy', (t) => {
  const c = loadConfig([], { hostname: 'Node-A' });
  t.like(c, {
    command: 'run', mode: 'iptables', nodeName: 'node-a', masqueradeAll: false, masqueradeBit: 14,
    syncPeriodMs: 30_000, minSyncPeriodMs: 1_000, metricsBindAddress: { host: '127.0.0.1', port: 10249 },
    healthzBindAddress: { host: '0.0.0.0', port: 10256 }, nodePortPrimary: false, live: false,
  });
  t.deepEqual(c.clusterCIDRs, []);
  t.true(Object.isFrozen(c));
  t.true(Object.isFrozen(c.clusterCIDRs));
  t.throws(() => { (c as { mode: string }).mode = 'nftables'; });
});

test('every flag in both spellings', (t) => {
  const c = loadConfig([
    '--proxy-mode=nftables', '--hostname-override', 'node-b', '--cluster-cidr', '10.0.0.0/8, fd00::/48',
    '--masquerade-all', '--nodeport-addresses=192.168.0.0/24,fd00:1::/64', '--iptables-sync-period', '1m30s',
    '--iptables-min-sync-period=0s', '--ipvs-scheduler', 'rr', '--metrics-bind-address', '[::1]:9000',
    '--healthz-bind-address=', '--iptables-masquerade-bit=15', '--v=4',
  ], { hostname: 'ignored' });
  t.like(c, {
    mode: 'nftables', nodeName: 'node-b', masqueradeAll: true, syncPeriodMs: 90_000, minSyncPeriodMs: 0,
    metricsBindAddress: { host: '::1', port: 9000 }, healthzBindAddress: null, masqueradeBit: 15, logLevel: 'debug',
  });
  t.deepEqual(c.clusterCIDRs, ['10.0.0.0/8', 'fd00::/48']);
  t.deepEqual(c.nodePortAddresses, ['192.168.0.0/24', 'fd00:1::/64']);
  t.is(loadConfig(['--metrics-bind-address', '0'], { hostname: 'n' }).metricsBindAddress, null, '"0" disables too');
  t.deepEqual(loadConfig(['--healthz-bind-address', '10.1.2.3'], { hostname: 'n' }).healthzBindAddress, { host: '10.1.2.3', port: 10256 }, 'bare IP gets the default port');
  t.true(loadConfig(['--nodeport-addresses', 'primary'], { hostname: 'n' }).nodePortPrimary);
  t.is(loadConfig(['--masquerade-all=false'], { hostname: 'n' }).masqueradeAll, false);
  // --ipvs-scheduler is the ipvs mode's setting: checked whatever the mode, handed on in ipvs mode.
  t.is(loadConfig(['--proxy-mode', 'ipvs', '--ipvs-scheduler', 'lc'], { hostname: 'n' }).modeSettings.scheduler, 'lc');
  t.is(loadConfig(['--proxy-mode=ipvs', '--ipvs-scheduler=sh'], { hostname: 'n' }).modeSettings.scheduler, 'sh');
  // kube-proxy's --ipvs-sync-period and --ipvs-min-sync-period stand for the iptables ones in ipvs mode.
  t.like(loadConfig(['--proxy-mode', 'ipvs', '--ipvs-sync-period', '5s', '--ipvs-min-sync-period', '0s'], { hostname: 'n' }), { syncPeriodMs: 5000, minSyncPeriodMs: 0 });
  t.like(loadConfig(['--ipvs-sync-period', '5s'], { hostname: 'n' }), { syncPeriodMs: 30_000 }, 'not in another mode');
});

test('commands and their arguments', (t) => {
  t.like(loadConfig(['dump', '--live', '--proxy-mode', 'nftables'], { hostname: 'n' }), { command: 'dump', live: true });
  t.like(loadConfig(['explain', '10.96.0.1:53/UDP'], { hostname: 'n' }), { command: 'explain', target: '10.96.0.1:53/UDP' });
  t.like(loadConfig(['--cleanup'], { hostname: 'n' }), { command: 'cleanup' });
  t.like(loadConfig(['diff'], { hostname: 'n' }), { command: 'diff' });
});

// One bad input per row: the problem it must produce.
const bad: [string, string[], RegExp][] = [
  ['unknown flag', ['--proxy-mod=iptables'], /unknown flag --proxy-mod/],
  ['flag without value', ['--kubeconfig'], /--kubeconfig needs a value/],
  ['unsupported mode', ['--proxy-mode', 'kernelspace'], /"kernelspace" is not supported by kproxy/],
  ['unknown mode', ['--proxy-mode', 'ebpf'], /unknown proxy mode "ebpf"/],
  ['bad duration', ['--iptables-sync-period', '30'], /--iptables-sync-period: "30" is not a duration/],
  ['zero sync period', ['--iptables-sync-period', '0s'], /--iptables-sync-period: must be greater than 0/],
  ['min above period', ['--iptables-sync-period', '1s', '--iptables-min-sync-period', '2s'], /must not be longer than the sync period/],
  ['bad CIDR', ['--cluster-cidr', '10.0.0.0/33'], /--cluster-cidr: "10.0.0.0\/33" is not a valid CIDR/],
  ['two CIDRs of a family', ['--cluster-cidr', '10.0.0.0/8,11.0.0.0/8'], /at most one CIDR per IP family/],
  ['bad nodeport address', ['--nodeport-addresses', '1.2.3.4'], /--nodeport-addresses: "1.2.3.4" is not a CIDR or "primary"/],
  ['primary mixed with CIDRs', ['--nodeport-addresses', 'primary,10.0.0.0/8'], /"primary" cannot be combined/],
  ['bad bind address', ['--metrics-bind-address', 'localhost:10249'], /--metrics-bind-address: "localhost:10249": "localhost" is not an IP address/],
  ['bad port', ['--healthz-bind-address', '0.0.0.0:70000'], /"70000" is not a port/],
  ['bad scheduler', ['--ipvs-scheduler', 'fastest'], /--ipvs-scheduler: "fastest" is unknown/],
  ['bad masquerade bit', ['--iptables-masquerade-bit', '32'], /32 is not in 0-31/],
  ['non-integer', ['--v', 'high'], /--v: "high" is not an integer/],
  ['bad log level', ['--log-level', 'loud'], /--log-level: "loud" is unknown/],
  ['bad bool', ['--masquerade-all=yes'], /--masquerade-all: "yes" is not true or false/],
  ['missing source file', ['--source-file', '/nonexistent/cluster.yaml'], /--source-file: \/nonexistent\/cluster.yaml: no such file/],
  ['missing config file', ['--config', '/nonexistent/kp.yaml'], /config file \/nonexistent\/kp.yaml: no such file/],
  ['bad node name', ['--hostname-override', 'bad_name!'], /node name "bad_name!" is not a valid DNS-1123 subdomain/],
  ['stray argument', ['run-now'], /unexpected argument: run-now/],
  ['explain without target', ['explain'], /explain needs an argument/],
  ['--live outside dump', ['diff', '--live'], /--live only applies to the dump command/],
];

for (const [name, argv, re] of bad) {
  test(`rejects: ${name}`, (t) => {
    const p = problems(argv);
    t.is(p.length, 1, `exactly one problem for ${argv.join(' ')}: ${JSON.stringify(p)}`);
    t.regex(p[0] ?? '', re);
  });
}

test('every problem of flags and file is listed in one error, file problems with their line', (t) => {
  const cfg = file(`${header}mode: kernelspace
clusterCIDR: 10.0.0.0/40
iptables:
  syncPeriod: soon
  masqueradeBit: "14"
ipvs:
  scheduler: rr
bogus: true
logging:
  verbosity: 2
  colour: yes
`);
  const argv = [
    '--proxy-mod=x', '--v', 'high', '--masquerade-all=yes', '--proxy-mode', 'ebpf', '--iptables-sync-period', '30',
    '--iptables-min-sync-period', 'later', '--cluster-cidr', '10.0.0.0/33,fd00::/129', '--nodeport-addresses', '1.2.3.4',
    '--metrics-bind-address', 'localhost:1', '--healthz-bind-address', '0.0.0.0:70000', '--ipvs-scheduler', 'fastest',
    '--iptables-masquerade-bit', '32', '--log-level', 'loud', '--source-file', '/nonexistent/x',
    '--hostname-override', 'bad_name!', 'stray', '--config', cfg, '--live', '--kubeconfig',
  ];
  let err: ConfigError | undefined;
  try {
    loadConfig(argv, { hostname: 'node-a' });
  } catch (e) {
    err = e as ConfigError;
  }
  t.truthy(err, 'validation must fail');
  t.is(err!.code, 'KPROXY_BAD_CONFIG');
  t.is(err!.exitCode, 2);
  // The file's mode, clusterCIDR and syncPeriod are overridden by flags, so only the flags' problems count for them.
  t.deepEqual([...err!.problems].sort(), [
    'unknown flag --proxy-mod',
    '--v: "high" is not an integer',
    '--masquerade-all: "yes" is not true or false',
    '--kubeconfig needs a value',
    'unexpected argument: stray (commands: dump, diff, explain, dns-cache)',
    '--live only applies to the dump command',
    `${cfg}:7: iptables.masqueradeBit: expected an integer, got "14"`,
    `${cfg}:10: unknown field "bogus"`,
    `${cfg}:13: unknown field "logging.colour"`,
    '--proxy-mode: unknown proxy mode "ebpf" (supported: iptables, nftables, ipvs, userspace)',
    '--hostname-override: node name "bad_name!" is not a valid DNS-1123 subdomain (set --hostname-override)',
    '--cluster-cidr: "10.0.0.0/33" is not a valid CIDR',
    '--cluster-cidr: "fd00::/129" is not a valid CIDR',
    '--nodeport-addresses: "1.2.3.4" is not a CIDR or "primary"',
    '--iptables-sync-period: "30" is not a duration (e.g. 30s, 1m, 500ms)',
    '--iptables-min-sync-period: "later" is not a duration (e.g. 30s, 1m, 500ms)',
    '--iptables-masquerade-bit: 32 is not in 0-31',
    '--ipvs-scheduler: "fastest" is unknown (known: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh, fo, ovf)',
    '--metrics-bind-address: "localhost:1": "localhost" is not an IP address',
    '--healthz-bind-address: "0.0.0.0:70000": "70000" is not a port (0-65535)',
    '--log-level: "loud" is unknown (known: trace, debug, info, warn, error, fatal, silent)',
    '--source-file: /nonexistent/x: no such file',
  ].sort());
  // The message lists them all, one per line.
  t.is(err!.message.split('\n').filter((l) => l.startsWith('  - ')).length, err!.problems.length);
  t.regex(err!.message, new RegExp(`\\(${err!.problems.length} problems\\)`));
});

test('file values are validated with their line when no flag overrides them', (t) => {
  const cfg = file(`${header}mode: kernelspace
clusterCIDR: 10.0.0.0/40
metricsBindAddress: nowhere
iptables:
  syncPeriod: soon
`);
  t.deepEqual(problems(['--config', cfg]), [
    `${cfg}:3: mode: proxy mode "kernelspace" is not supported by kproxy (supported: iptables, nftables, ipvs, userspace)`,
    `${cfg}:4: clusterCIDR: "10.0.0.0/40" is not a valid CIDR`,
    `${cfg}:7: iptables.syncPeriod: "soon" is not a duration (e.g. 30s, 1m, 500ms)`,
    `${cfg}:5: metricsBindAddress: "nowhere": expected IP:PORT`,
  ]);
});

test('YAML syntax errors and wrong apiVersion/kind carry line numbers', (t) => {
  const broken = file(`${header}mode: iptables\niptables:\n  syncPeriod: [30s\n`);
  const p = problems(['--config', broken]);
  t.is(p.length, 1, JSON.stringify(p));
  t.regex(p[0], new RegExp(`^${broken}:\\d+: invalid YAML`));
  const wrong = file('apiVersion: v1\nkind: ConfigMap\nmode: iptables\n');
  t.deepEqual(problems(['--config', wrong]), [
    `${wrong}:1: apiVersion must be kubeproxy.config.k8s.io/v1alpha1, got "v1"`,
    `${wrong}:2: kind must be KubeProxyConfiguration, got "ConfigMap"`,
  ]);
});

test('a full KubeProxyConfiguration loads; flags override it; kube-proxy fields kproxy does not use are accepted', (t) => {
  const kc = file('apiVersion: v1\nkind: Config\n');
  const cfg = file(`${header}mode: nftables
clientConnection:
  kubeconfig: ${kc}
  qps: 5
hostnameOverride: node-z
clusterCIDR: 10.244.0.0/16,fd00:244::/56
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 0.0.0.0:10249
nodePortAddresses: [primary]
bindAddress: 0.0.0.0
conntrack:
  maxPerCore: 32768
  tcpEstablishedTimeout: 24h0m0s
iptables:
  masqueradeAll: true
  masqueradeBit: 14
  syncPeriod: 30s
  minSyncPeriod: 1s
nftables:
  masqueradeAll: false
  masqueradeBit: 13
  syncPeriod: 20s
  minSyncPeriod: 2s
ipvs:
  scheduler: lc
  strictARP: true
logging:
  verbosity: 5
  format: text
featureGates: {SomeGate: true}
`);
  const c = loadConfig(['--config', cfg, '--iptables-min-sync-period', '500ms'], { hostname: 'x' });
  t.like(c, {
    mode: 'nftables', kubeconfig: kc, nodeName: 'node-z', metricsBindAddress: { host: '0.0.0.0', port: 10249 },
    nodePortPrimary: true, masqueradeAll: false, masqueradeBit: 13, syncPeriodMs: 20_000, minSyncPeriodMs: 500,
    logLevel: 'trace',
  });
  // The ipvs block's fields are the ipvs mode's settings.
  t.like(loadConfig(['--config', cfg, '--proxy-mode', 'ipvs'], { hostname: 'x' }).modeSettings, { scheduler: 'lc', strictARP: true });
  t.deepEqual(c.clusterCIDRs, ['10.244.0.0/16', 'fd00:244::/56']);
  // iptables mode reads the iptables block.
  t.like(loadConfig(['--config', cfg, '--proxy-mode', 'iptables'], { hostname: 'x' }), { masqueradeAll: true, masqueradeBit: 14, syncPeriodMs: 30_000 });
});

test('Go durations', (t) => {
  t.is(parseDuration('30s'), 30_000);
  t.is(parseDuration('1h2m3.5s'), 3_723_500);
  t.is(parseDuration('500ms'), 500);
  t.is(parseDuration('0'), 0);
  t.is(parseDuration('1500us'), 1.5);
  for (const s of ['', '30', 's', '1d', '-1s', '1s ', '1 s']) t.is(parseDuration(s === '1s ' ? 'x1s' : s), undefined, s);
});

test('bind addresses', (t) => {
  t.deepEqual(parseBindAddress(':10256', 1), { host: '0.0.0.0', port: 10256 });
  t.deepEqual(parseBindAddress('[::]:10256', 1), { host: '::', port: 10256 });
  t.deepEqual(parseBindAddress('::1', 7), { host: '::1', port: 7 });
  t.is(typeof parseBindAddress('[::1', 7), 'string');
  t.is(typeof parseBindAddress('1.2.3.4:', 7), 'string');
});

test('in the file, empty bind addresses and zero periods mean the default (kube-proxy\'s defaulting); flags can disable', (t) => {
  const cfg = file(`${header}metricsBindAddress: ""\nhealthzBindAddress: ""\niptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\n`);
  t.like(loadConfig(['--config', cfg], { hostname: 'n' }), {
    metricsBindAddress: { host: '127.0.0.1', port: 10249 }, healthzBindAddress: { host: '0.0.0.0', port: 10256 },
    syncPeriodMs: 30_000, minSyncPeriodMs: 1_000,
  });
  t.like(loadConfig(['--config', cfg, '--metrics-bind-address=', '--iptables-min-sync-period=0s'], { hostname: 'n' }), {
    metricsBindAddress: null, minSyncPeriodMs: 0,
  });
});
