// dns-cache configuration: flags, YAML, defaults, and errors that list every problem.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, configFromObject, DEFAULT_CACHE } from '../dns-cache/config.ts';
import { parseArgs, resolveConfig } from '../dns-cache/flags.ts';

const dir = mkdtempSync(join(tmpdir(), 'kproxy-dns-config-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('flags: --listen and --zone build the config; NodeLocal DNSCache defaults apply', (t) => {
  const c = resolveConfig(parseArgs([
    '--listen', '169.254.20.10:53', '--listen', '10.96.0.10',
    '--zone', 'cluster.local=10.96.0.10', '--zone', 'cluster-b.local=10.100.0.10:5353,[fd00::10]:53',
    '--setup-interface', '--skip-teardown=false',
  ]));
  t.deepEqual(c.listen, [{ host: '169.254.20.10', port: 53 }, { host: '10.96.0.10', port: 53 }]);
  t.deepEqual(c.zones.map((z) => z.suffix), ['cluster.local', 'cluster-b.local']);
  t.deepEqual(c.zones[1].upstreams, [{ host: '10.100.0.10', port: 5353 }, { host: 'fd00::10', port: 53 }]);
  t.is(c.zones[0].cache.successTtl, 30);
  t.is(c.zones[0].cache.denialTtl, 5);
  t.is(c.zones[0].policy, 'sequential');
  t.false(c.zones[0].forceTcp);
  t.true(c.setupInterface);
  t.false(c.skipTeardown);
});

test('a resolv.conf path as upstream reads its nameservers', (t) => {
  const p = join(dir, 'resolv.conf');
  writeFileSync(p, '# comment\nsearch svc.cluster.local\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:5\n');
  const c = resolveConfig(parseArgs(['--listen', '127.0.0.1:5300', '--zone', `.=${p}`]));
  t.deepEqual(c.zones[0].upstreams, [{ host: '192.0.2.53', port: 53 }, { host: '2001:db8::53', port: 53 }]);
});

test('YAML: defaults and per-zone settings, cache settings merged over the defaults', (t) => {
  const c = configFromObject({
    listen: ['127.0.0.1:5301'],
    defaults: { timeout_ms: 1500, cache: { capacity: 100 } },
    zones: [
      { suffix: 'cluster.local', upstreams: ['10.96.0.10'], transport: 'force_tcp', policy: 'round_robin', cache: { success_ttl: 10 } },
      { suffix: '.', upstreams: ['192.0.2.1'] },
    ],
  }, 'test');
  t.is(c.zones[0].timeoutMs, 1500);
  t.true(c.zones[0].forceTcp);
  t.is(c.zones[0].policy, 'round_robin');
  t.deepEqual(c.zones[0].cache, { ...DEFAULT_CACHE, capacity: 100, successTtl: 10 });
  t.is(c.zones[1].cache.capacity, 100);
});

test('every problem is listed in one error', (t) => {
  const e = t.throws(() => configFromObject({
    listen: ['0.0.0.0:53', 'nonsense'],
    colour: 'blue',
    zones: [
      { suffix: 'cluster.local', upstreams: ['10.0.0.300'], policy: 'fastest', timeout_ms: -1 },
      { suffix: 'Cluster.Local.', upstreams: [] },
      { suffix: 'bad..name', upstreams: ['10.0.0.1:99999'], cache: { success_ttl: 'long', extra: 1 } },
    ],
  }, 'test.yaml'), { instanceOf: ConfigError }) as ConfigError;
  const want = [
    'listen[0]: 0.0.0.0:53 is a wildcard',
    'listen[1]: "nonsense" is not an IP address',
    'colour: unknown key',
    'zones[0].upstreams[0]: "10.0.0.300" is not an IP address',
    'zones[0].policy: want sequential, round_robin or random',
    'zones[0].timeout_ms: want an integer from 10',
    'zones[1].suffix: "Cluster.Local." repeats zones[0]',
    'zones[1].upstreams: want a non-empty list',
    'zones[2].suffix: "bad..name" is not a valid domain name',
    'zones[2].upstreams[0]: "10.0.0.1:99999" has a bad port',
    'zones[2].cache.success_ttl: want an integer',
    'zones[2].cache.extra: unknown key',
  ];
  for (const w of want) t.true(e.problems.some((p) => p.startsWith(w)), `missing problem "${w}" in:\n${e.message}`);
  t.is(e.problems.length, want.length, e.message);
  t.true(e.message.startsWith('invalid dns-cache configuration (test.yaml)'));
});

test('bad flags are all reported', (t) => {
  const e = t.throws(() => parseArgs(['--zone', 'nothing', '--bogus', '--setup-interface=maybe', '--listen']), { instanceOf: ConfigError }) as ConfigError;
  t.is(e.problems.length, 4, e.message);
});

test('an unreadable or non-YAML config file is a clear error', (t) => {
  const e1 = t.throws(() => resolveConfig(parseArgs(['--config', join(dir, 'missing.yaml')])), { instanceOf: ConfigError }) as ConfigError;
  t.regex(e1.problems[0], /cannot read the file/);
  const p = join(dir, 'broken.yaml');
  writeFileSync(p, 'zones: [\n');
  const e2 = t.throws(() => resolveConfig(parseArgs(['--config', p])), { instanceOf: ConfigError }) as ConfigError;
  t.regex(e2.problems[0], /not valid YAML/);
});

test('manifests/dns-cache.yaml: its ConfigMap is a valid config and the DaemonSet matches it', (t) => {
  const docs = parseAllDocuments(readFileSync(fileURLToPath(new URL('../manifests/dns-cache.yaml', import.meta.url)), 'utf8')).map((d) => d.toJS() as Record<string, any>);
  const cm = docs.find((d) => d.kind === 'ConfigMap');
  const ds = docs.find((d) => d.kind === 'DaemonSet');
  if (!cm || !ds) return t.fail('ConfigMap or DaemonSet missing');
  t.false(docs.some((d) => /Role/.test(d.kind)), 'it needs no RBAC');
  const config = configFromObject(parseYaml(cm.data['config.yaml']), 'manifest');
  t.deepEqual(config.zones.map((z) => z.suffix), ['cluster.local', 'cluster-b.local', 'in-addr.arpa', 'ip6.arpa', '.']);
  t.true(config.setupInterface && config.setupIptables);
  const pod = ds.spec.template.spec;
  t.true(pod.hostNetwork);
  t.false(pod.automountServiceAccountToken);
  const c = pod.containers[0];
  t.true(c.securityContext.capabilities.add.includes('NET_ADMIN'));
  t.is(c.args[0], 'dns-cache');
  t.true(c.env.some((e: { name: string; value: string }) => e.name === 'NODE_OPTIONS' && e.value.includes('--max-semi-space-size')));
  const [host, port] = config.healthAddr.split(':');
  for (const probe of [c.livenessProbe, c.readinessProbe]) {
    t.is(probe.httpGet.path, '/health');
    t.is(probe.httpGet.host, host);
    t.is(String(probe.httpGet.port), port);
  }
  const mount = c.volumeMounts.find((m: { name: string }) => m.name === 'config').mountPath;
  t.is(c.args[1], `--config=${mount}/config.yaml`);
});

test('TCP limits: defaults, YAML keys, flags over single keys, bad values reported', (t) => {
  const d = resolveConfig(parseArgs(['--listen', '127.0.0.1:5300', '--zone', '.=192.0.2.1']));
  t.deepEqual(d.tcp, { idleTimeoutMs: 10_000, messageTimeoutMs: 3_000, maxConnections: 1000, maxPerClient: 100 });
  const p = join(dir, 'tcp.yaml');
  writeFileSync(p, 'listen: [127.0.0.1:5300]\ntcp: {max_connections: 50, message_timeout_ms: 500}\nzones: [{suffix: ., upstreams: [192.0.2.1]}]\n');
  const c = resolveConfig(parseArgs(['--config', p, '--tcp-max-connections-per-client', '7']));
  t.deepEqual(c.tcp, { idleTimeoutMs: 10_000, messageTimeoutMs: 500, maxConnections: 50, maxPerClient: 7 });
  const e = t.throws(() => resolveConfig(parseArgs(['--zone', '.=192.0.2.1', '--tcp-max-connections', 'lots', '--tcp-message-timeout-ms', '0'])), { instanceOf: ConfigError }) as ConfigError;
  t.deepEqual(e.problems.map((x) => x.split(':')[0]), ['tcp.message_timeout_ms', 'tcp.max_connections']);
});
