// The shipped manifest and Dockerfile: every document parses, the DaemonSet
// has what a kube-proxy replacement needs, RBAC is least privilege, and the
// ConfigMap passes kproxy's own validation.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../proxy/config.ts';

const root = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));
type Any = any;

function load(): Any[] {
  const docs = parseAllDocuments(readFileSync(root('manifests/kproxy.yaml'), 'utf8'));
  if (!Array.isArray(docs)) throw new Error('empty manifest');
  for (const d of docs) if (d.errors.length > 0) throw new Error(d.errors.map((e) => e.message).join('\n'));
  return docs.map((d) => d.toJS());
}

const byKind = (docs: Any[], kind: string): Any => {
  const found = docs.filter((d) => d.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0];
};

test('documents: ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap, DaemonSet', (t) => {
  const docs = load();
  t.deepEqual(docs.map((d) => d.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'ServiceAccount']);
  for (const d of docs) t.truthy(d.apiVersion && d.metadata?.name, JSON.stringify(d).slice(0, 80));
});

test('RBAC is least privilege and bound to the pod\'s ServiceAccount', (t) => {
  const docs = load();
  const role = byKind(docs, 'ClusterRole');
  const grants = new Set<string>();
  for (const r of role.rules) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) grants.add(`${g}/${res}:${v}`);
  t.deepEqual([...grants].sort(), [
    '/events:create', '/events:patch', '/nodes:list', '/nodes:watch', '/services:list', '/services:watch',
    'discovery.k8s.io/endpointslices:list', 'discovery.k8s.io/endpointslices:watch',
    'events.k8s.io/events:create', 'events.k8s.io/events:patch',
  ]);
  const sa = byKind(docs, 'ServiceAccount');
  const binding = byKind(docs, 'ClusterRoleBinding');
  t.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  t.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  t.is(byKind(docs, 'DaemonSet').spec.template.spec.serviceAccountName, sa.metadata.name);
});

test('DaemonSet: host network, node-critical, capabilities not privileged, probes, mounts, every node, rolling', (t) => {
  const docs = load();
  const ds = byKind(docs, 'DaemonSet');
  const pod = ds.spec.template.spec;
  t.is(pod.hostNetwork, true);
  t.is(pod.priorityClassName, 'system-node-critical');
  t.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  t.is(ds.spec.updateStrategy.type, 'RollingUpdate');
  t.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
  const [c] = pod.containers;
  t.not(c.securityContext.privileged, true);
  t.deepEqual([...c.securityContext.capabilities.add].sort(), ['NET_ADMIN', 'NET_RAW']);
  t.like(c.livenessProbe.httpGet, { path: '/livez', port: 10256 });
  t.like(c.readinessProbe.httpGet, { path: '/healthz', port: 10256 });
  const volumes = new Map<string, Any>(pod.volumes.map((v: Any) => [v.name, v]));
  const mount = (path: string): Any => c.volumeMounts.find((m: Any) => m.mountPath === path);
  t.is(volumes.get(mount('/run/xtables.lock').name).hostPath.path, '/run/xtables.lock');
  t.is(volumes.get(mount('/run/xtables.lock').name).hostPath.type, 'FileOrCreate');
  t.is(mount('/lib/modules').readOnly, true);
  t.is(volumes.get(mount('/lib/modules').name).hostPath.path, '/lib/modules');
  // The --config path is inside the ConfigMap's mount, under its key.
  const cm = byKind(docs, 'ConfigMap');
  const configArg = c.args.find((a: string) => a.startsWith('--config='))!.slice('--config='.length);
  const cmMount = c.volumeMounts.find((m: Any) => volumes.get(m.name)?.configMap?.name === cm.metadata.name);
  t.truthy(cmMount, 'ConfigMap is mounted');
  t.is(configArg, `${cmMount.mountPath}/config.conf`);
  t.true('config.conf' in cm.data);
  t.true(c.args.includes('--hostname-override=$(NODE_NAME)'));
  t.deepEqual(c.env.find((e: Any) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
});

test('the ConfigMap\'s KubeProxyConfiguration passes kproxy\'s validation, with the DaemonSet\'s flags', (t) => {
  const docs = load();
  const cm = byKind(docs, 'ConfigMap');
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-manifest-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'config.conf');
  writeFileSync(path, cm.data['config.conf']);
  const c = loadConfig([`--config=${path}`, '--hostname-override=node-1']);
  t.like(c, { mode: 'iptables', healthzBindAddress: { host: '0.0.0.0', port: 10256 }, syncPeriodMs: 30_000, minSyncPeriodMs: 1_000 });
  t.deepEqual(c.clusterCIDRs, ['10.244.0.0/16']);
  // Switched to the IPVS mode, its block gives the mode's settings.
  const ipvs = loadConfig([`--config=${path}`, '--hostname-override=node-1', '--proxy-mode=ipvs']);
  t.like(ipvs.modeSettings, { scheduler: 'rr', strictARP: false, gracefulTerminationPeriod: 30_000 });
  t.like(ipvs, { syncPeriodMs: 30_000, minSyncPeriodMs: 1_000 });
});

test('Dockerfile: Node 24 base, the kernel tools, production install, kproxy entrypoint', (t) => {
  const text = readFileSync(root('Dockerfile'), 'utf8');
  t.regex(text, /^FROM node:24[-\w.]*$/m);
  for (const pkg of ['iptables', 'nftables', 'ipset', 'conntrack', 'iproute2', 'ipvsadm', 'procps']) t.regex(text, new RegExp(`apt-get install[^\\n]*\\b${pkg}\\b`), pkg);
  t.regex(text, /npm ci --omit=dev/);
  t.regex(text, /^ENTRYPOINT \["kproxy"\]$/m);
  // Every native addon binding.gyp builds is in the image.
  const targets = (JSON.parse(readFileSync(root('binding.gyp'), 'utf8')) as { targets: { target_name: string }[] }).targets.map((x) => x.target_name);
  t.true(targets.length >= 4, targets.join(', '));
  for (const addon of targets) t.regex(text, new RegExp(`^COPY --from=addon .*\\b${addon}\\.node\\b`, 'm'), addon);
  for (const dir of ['bin', 'lib', 'proxy', 'modes', 'dns-cache']) t.regex(text, new RegExp(`^COPY ${dir} `, 'm'), dir);
  // The addon stage has every source folder binding.gyp builds from.
  const gyp = JSON.parse(readFileSync(root('binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
  for (const dir of new Set(gyp.targets.flatMap((x) => x.sources.map((f) => f.slice(0, f.lastIndexOf('/')))))) {
    t.regex(text, new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'), `the addon stage copies ${dir}`);
  }
});

// The userspace mode's DaemonSet: the same objects under the same names, a
// rolling update that surges (old and new side by side), no host ports
// (they would stop the surge pod from being scheduled), time to hand over
// and drain, and Service ports below 1024.
function loadFile(name: string): Any[] {
  const docs = parseAllDocuments(readFileSync(root(`manifests/${name}`), 'utf8'));
  if (!Array.isArray(docs)) throw new Error('empty manifest');
  for (const d of docs) if (d.errors.length > 0) throw new Error(d.errors.map((e) => e.message).join('\n'));
  return docs.map((d) => d.toJS());
}

test('userspace manifest: the same objects and RBAC as kproxy.yaml, surging updates, no host ports, room to hand over and drain', (t) => {
  const docs = loadFile('kproxy-userspace.yaml');
  const base = load();
  t.deepEqual(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort(), base.map((d) => `${d.kind}/${d.metadata.name}`).sort());
  t.deepEqual(byKind(docs, 'ClusterRole').rules, byKind(base, 'ClusterRole').rules);
  const ds = byKind(docs, 'DaemonSet');
  t.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  const pod = ds.spec.template.spec;
  const [c] = pod.containers;
  t.is(c.ports, undefined, 'no container port: with hostNetwork it would be a host port and block the surge pod');
  t.true(c.securityContext.capabilities.add.includes('NET_BIND_SERVICE'));
  t.not(c.securityContext.privileged, true);

  const dir = mkdtempSync(join(tmpdir(), 'kproxy-manifest-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'config.conf');
  writeFileSync(path, byKind(docs, 'ConfigMap').data['config.conf']);
  const cfg = loadConfig([`--config=${path}`, '--hostname-override=node-1']);
  t.is(cfg.mode, 'userspace');
  const s = cfg.modeSettings as { handoverTimeout: number; drainGrace: number; connectTimeouts: number[] };
  t.deepEqual(s.connectTimeouts, [250, 500, 1000, 2000]);
  t.true(pod.terminationGracePeriodSeconds * 1000 >= s.handoverTimeout + s.drainGrace + 10_000, 'the kubelet waits for the handover and the drain');
});
