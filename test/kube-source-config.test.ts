// Start-up problems of the kube source are reported at once with a clear
// message, and the retry delays follow the documented schedule.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KproxyError } from '../lib/errors.ts';
import { silentLogger } from '../lib/log.ts';
import { Backoff } from '../lib/backoff.ts';
import { KubeSource } from '../proxy/source/kube.ts';

function kubeconfig(t: { teardown(fn: () => void): void }, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-kubeconfig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'config');
  writeFileSync(path, text);
  return path;
}

const plainHttp = (skip: boolean) => `
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: http://127.0.0.1:1
${skip ? '    insecure-skip-tls-verify: true\n' : ''}users:
- name: u
  user: {}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`;

test('a missing kubeconfig file is a configuration error naming the file', (t) => {
  const path = join(tmpdir(), 'kproxy-no-such-dir', 'kubeconfig');
  const err = t.throws(() => new KubeSource({ kubeconfig: path, nodeName: 'n' }, silentLogger()), { instanceOf: KproxyError });
  t.is(err?.code, 'KPROXY_BAD_CONFIG');
  t.true(err?.message.includes(path), err?.message);
});

test('a kubeconfig without a current cluster is rejected', (t) => {
  const path = kubeconfig(t, 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
  const err = t.throws(() => new KubeSource({ kubeconfig: path, nodeName: 'n' }, silentLogger()), { instanceOf: KproxyError });
  t.regex(err?.message ?? '', /no current cluster/);
});

test('plain http without insecure-skip-tls-verify is rejected up front, with the fix in the message', (t) => {
  const bad = kubeconfig(t, plainHttp(false));
  const err = t.throws(() => new KubeSource({ kubeconfig: bad, nodeName: 'n' }, silentLogger()), { instanceOf: KproxyError });
  t.regex(err?.message ?? '', /insecure-skip-tls-verify/);
  const good = kubeconfig(t, plainHttp(true));
  t.notThrows(() => new KubeSource({ kubeconfig: good, nodeName: 'n' }, silentLogger()));
});

test('with no kubeconfig anywhere and outside a cluster, the error says where one can come from', (t) => {
  const home = mkdtempSync(join(tmpdir(), 'kproxy-home-'));
  const saved = { HOME: process.env.HOME, KUBECONFIG: process.env.KUBECONFIG, KUBERNETES_SERVICE_HOST: process.env.KUBERNETES_SERVICE_HOST };
  process.env.HOME = home;
  delete process.env.KUBECONFIG;
  delete process.env.KUBERNETES_SERVICE_HOST;
  try {
    const err = t.throws(() => new KubeSource({ nodeName: 'n' }, silentLogger()), { instanceOf: KproxyError });
    t.regex(err?.message ?? '', /no kubeconfig found: pass --kubeconfig/);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(home, { recursive: true, force: true });
  }
});

test('a node name is required', (t) => {
  const path = kubeconfig(t, plainHttp(true));
  t.throws(() => new KubeSource({ kubeconfig: path, nodeName: '' }, silentLogger()), { message: /nodeName/ });
});

test('backoff doubles from 0.5 s to a 30 s cap and starts over after reset', (t) => {
  const b = new Backoff(500, 30_000, 0);
  const steps = Array.from({ length: 9 }, () => b.next());
  t.deepEqual(steps, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  b.reset();
  t.is(b.next(), 500);
});

test('backoff jitter only shortens a step, by at most the jitter fraction', (t) => {
  const b = new Backoff(500, 30_000, 0.2);
  const expected = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];
  for (const step of expected) {
    const d = b.next();
    t.true(d <= step && d >= step * 0.8, `${d} within [${step * 0.8}, ${step}]`);
  }
});

test('backoff rejects nonsense limits', (t) => {
  t.throws(() => new Backoff(0, 100), { instanceOf: RangeError });
  t.throws(() => new Backoff(200, 100), { instanceOf: RangeError });
});
