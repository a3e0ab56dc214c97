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

test('manifests/dns-cache.yaml: its ConfigMap is a valid config, the DaemonSet matches it, RBAC is least privilege', (t) => {
  const docs = parseAllDocuments(readFileSync(fileURLToPath(new URL('../manifests/dns-cache.yaml', import.meta.url)), 'utf8')).map((d) => d.toJS() as Record<string, any>);
  const one = (kind: string): Record<string, any> => {
    const found = docs.filter((d) => d.kind === kind);
    if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
    return found[0];
  };
  const cm = one('ConfigMap');
  const ds = one('DaemonSet');
  const config = configFromObject(parseYaml(cm.data['config.yaml']), 'manifest');
  t.deepEqual(config.zones.map((z) => z.suffix), ['cluster.local', 'cluster-b.local', 'in-addr.arpa', 'ip6.arpa', '.']);
  t.deepEqual(config.zones[0].kubernetes, { kubeconfig: undefined, ttl: 5, staleAfterMs: 60_000, pods: true }, 'cluster.local from the in-cluster API server');
  t.is(config.zones[0].upstreams.length, 1, 'with kube-dns as the fallback');
  t.true(config.setupInterface && config.setupIptables);
  // Least privilege: list and watch of the three kinds the records come from.
  const role = one('ClusterRole');
  const grants = new Set<string>();
  for (const r of role.rules) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) grants.add(`${g}/${res}:${v}`);
  t.deepEqual([...grants].sort(), [
    '/namespaces:list', '/namespaces:watch', '/services:list', '/services:watch',
    'discovery.k8s.io/endpointslices:list', 'discovery.k8s.io/endpointslices:watch',
  ]);
  const sa = one('ServiceAccount');
  const binding = one('ClusterRoleBinding');
  t.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  t.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  const pod = ds.spec.template.spec;
  t.is(pod.serviceAccountName, sa.metadata.name);
  t.not(pod.automountServiceAccountToken, false, 'the token is mounted (k8s:in-cluster)');
  t.true(pod.hostNetwork);
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

test('Kubernetes sources: k8s: entries in flags and YAML, settings with defaults, every problem listed', (t) => {
  const c = resolveConfig(parseArgs([
    '--zone', 'cluster.local=k8s:in-cluster,10.96.0.10', '--zone', 'cluster-b.local=k8s:/etc/kproxy/cluster-b.kubeconfig',
    '--kubernetes-ttl', '7', '--kubernetes-pods', 'disabled',
  ]));
  t.deepEqual(c.zones[0].kubernetes, { kubeconfig: undefined, ttl: 7, staleAfterMs: 60_000, pods: false });
  t.deepEqual(c.zones[0].upstreams, [{ host: '10.96.0.10', port: 53 }]);
  t.deepEqual(c.zones[1].kubernetes, { kubeconfig: '/etc/kproxy/cluster-b.kubeconfig', ttl: 7, staleAfterMs: 60_000, pods: false });
  t.deepEqual(c.zones[1].upstreams, [], 'no fallback is allowed (unsynced: SERVFAIL)');
  const p = join(dir, 'k8s.yaml');
  writeFileSync(p, 'defaults: {kubernetes: {stale_after_ms: 5000}}\nzones: [{suffix: cluster.local, upstreams: [k8s:in-cluster, 10.96.0.10], kubernetes: {ttl: 30}}]\n');
  const y = resolveConfig(parseArgs(['--config', p, '--kubernetes-pods', 'disabled']));
  t.deepEqual(y.zones[0].kubernetes, { kubeconfig: undefined, ttl: 30, staleAfterMs: 5000, pods: false });
  const e = t.throws(() => configFromObject({
    zones: [
      { suffix: 'cluster.local', upstreams: ['k8s:in-cluster', 'k8s:/x'], kubernetes: { ttl: -1, pods: 'maybe', colour: 1 } },
      { suffix: 'in-addr.arpa', upstreams: ['k8s:in-cluster'] },
      { suffix: 'other.local', upstreams: ['k8s:'] },
      { suffix: 'plain.local', upstreams: ['10.0.0.1'], kubernetes: { ttl: 5 } },
    ],
  }, 'test'), { instanceOf: ConfigError }) as ConfigError;
  for (const w of [
    'zones[0].upstreams[1]: a zone has at most one Kubernetes source',
    'zones[0].kubernetes.colour: unknown key',
    'zones[0].kubernetes.pods: want insecure or disabled',
    'zones[0].kubernetes.ttl: want an integer from 0 to 3600',
    'zones[1].upstreams: a Kubernetes source needs the cluster\'s domain',
    'zones[2].upstreams[0]: want k8s:KUBECONFIG',
    'zones[3].kubernetes: kubernetes settings need a k8s: upstream',
  ]) t.true(e.problems.some((x) => x.startsWith(w)), `missing "${w}" in:\n${e.message}`);
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

test('the image compiles the module loaded for zones answered from an API server ahead of time (no TypeScript stripper at run time)', (t) => {
  const dockerfile = readFileSync(fileURLToPath(new URL('../Dockerfile', import.meta.url)), 'utf8');
  const warm = /RUN node --input-type=module -e "for \(const m of \[([^\]]*)\]/.exec(dockerfile)?.[1] ?? '';
  for (const m of ['dns-cache/main.ts', 'dns-cache/kube-zone.ts']) t.true(warm.includes(`'${m}'`), `${m} is not in the compile cache list: ${warm}`);
  t.true(warm.startsWith("'proxy/cli.ts'"), `proxy/cli.ts (the client library's hook) is not the first in the compile cache list: ${warm}`);
  const resolver = readFileSync(fileURLToPath(new URL('../dns-cache/kube-zones.ts', import.meta.url)), 'utf8');
  t.regex(resolver, /await import\('\.\/kube-zone\.ts'\)/, 'the module the image warms is the one loaded lazily');
});
