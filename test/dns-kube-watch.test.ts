// A watched zone over time, against the list/watch test API server: Service
// changes answered within one second of the watch event, forwarding until
// the first list, the staleness bound when the API server goes away, a
// relist after 410 Gone without a gap, config reloads.
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { TestApiServer } from './helpers/apiserver.ts';
import { TestDnsServer, startTestCache, type Decoded, type TestCache } from './helpers/dns-server.ts';
import { clusterIPService, endpointSlice, headlessService, namespace } from './helpers/kube-dns-fixtures.ts';

const tuning = { retryInitialMs: 100, retryMaxMs: 300 };
const dir = mkdtempSync(join(tmpdir(), 'kproxy-dns-kube-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const data = (p: Decoded): unknown[] => (p.answers ?? []).map((a) => a.data);

async function eventually(what: string, ok: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Rig {
  api: TestApiServer;
  kubeDns: TestDnsServer;
  cache: TestCache;
  logs: Array<{ msg: string; level: number }>;
}

/** An API server with the default namespace and one Service, kube-dns beside it, and the cache. */
async function rig(t: ExecutionContext, extra: string[] = [], opts: { paused?: boolean } = {}): Promise<Rig> {
  const api = await TestApiServer.start();
  api.upsert(namespace('default'));
  api.upsert(clusterIPService('default', 'web', ['10.96.0.20'], [{ name: 'http', port: 80 }]));
  const kubeDns = await TestDnsServer.start({
    zone: 'cluster.local',
    records: { 'web.default.svc.cluster.local': [{ type: 'A', data: '10.96.99.99', ttl: 30 }] },
    soaMinimum: 0,
  });
  const logs: Array<{ msg: string; level: number }> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => { const j = JSON.parse(line) as { msg: string; level: number }; logs.push(j); } });
  if (opts.paused) await api.pause('refuse');
  const cache = await startTestCache(['--zone', `cluster.local=k8s:${api.kubeconfigPath()},${kubeDns.address}`, ...extra], { kube: { tuning }, log });
  t.teardown(async () => {
    await cache.stop();
    await kubeDns.stop();
    await api.close();
  });
  return { api, kubeDns, cache, logs };
}

const answering = async (c: TestCache): Promise<number> => c.metric('kproxy_dns_cache_kubernetes_answering', { zone: 'cluster.local.' });

test('a Service created, changed and deleted is answered within one second of the watch event', async (t) => {
  const r = await rig(t);
  await eventually('the zone to answer', async () => await answering(r.cache) === 1);
  const name = 'late.default.svc.cluster.local';
  const until = async (what: string, ok: (p: Decoded) => boolean): Promise<number> => {
    const started = Date.now();
    await eventually(what, async () => ok((await r.cache.ask(name, 'A')).packet), 1000);
    return Date.now() - started;
  };
  t.is((await r.cache.ask(name, 'A')).packet.rcode, 'NXDOMAIN');
  r.api.upsert(headlessService('default', 'late', [{ name: 'http', port: 80 }]));
  r.api.upsert(endpointSlice('default', 'late', 'a', [{ ip: '10.244.9.1' }], [{ name: 'http', port: 80 }]));
  const created = await until('the new Service', (p) => data(p).join() === '10.244.9.1');
  r.api.upsert(endpointSlice('default', 'late', 'a', [{ ip: '10.244.9.1' }, { ip: '10.244.9.2' }], [{ name: 'http', port: 80 }]));
  const changed = await until('the new endpoint', (p) => data(p).length === 2);
  r.api.upsert(endpointSlice('default', 'late', 'a', [{ ip: '10.244.9.2', ready: false }, { ip: '10.244.9.3' }], [{ name: 'http', port: 80 }]));
  const changedAgain = await until('the endpoint no longer ready', (p) => data(p).join() === '10.244.9.3');
  r.api.remove({ kind: 'Service', namespace: 'default', name: 'late' });
  const deleted = await until('the deletion', (p) => p.rcode === 'NXDOMAIN');
  t.log(`created ${created} ms, changed ${changed} ms and ${changedAgain} ms, deleted ${deleted} ms after the API server took the change`);
  for (const ms of [created, changed, changedAgain, deleted]) t.true(ms < 1000);
  t.is(r.kubeDns.count(name), 0, 'kube-dns was never asked');
  // A port renamed: the old SRV name goes, the new one comes.
  r.api.upsert(clusterIPService('default', 'web', ['10.96.0.20'], [{ name: 'https', port: 443 }]));
  await eventually('the renamed port', async () => (await r.cache.ask('_https._tcp.web.default.svc.cluster.local', 'SRV')).packet.answers?.length === 1, 1000);
  t.is((await r.cache.ask('_http._tcp.web.default.svc.cluster.local', 'SRV')).packet.rcode, 'NXDOMAIN');
});

test('before its first list the zone forwards to its DNS upstream (metric and log say so), then answers itself', async (t) => {
  const r = await rig(t, [], { paused: true });
  const fwd = await r.cache.ask('web.default.svc.cluster.local', 'A');
  t.deepEqual(data(fwd.packet), ['10.96.99.99'], 'kube-dns answered');
  t.is(r.kubeDns.count('web.default.svc.cluster.local'), 1);
  t.is(await answering(r.cache), 0);
  t.true(r.logs.some((l) => /forwarding to the DNS upstreams until they are listed/.test(l.msg)));
  await r.api.resume();
  await eventually('the zone to answer', async () => await answering(r.cache) === 1);
  t.true(r.logs.some((l) => /answering this zone from the API server/.test(l.msg)));
  const own = await r.cache.ask('web.default.svc.cluster.local', 'A');
  t.deepEqual(data(own.packet), ['10.96.0.20'], 'answered from the watcher, not the cached forwarded answer');
  t.is(r.kubeDns.count('web.default.svc.cluster.local'), 1);
});

test('the API server going away: answers go on until the staleness bound, then the zone forwards; it answers again when the API server returns', async (t) => {
  const r = await rig(t, ['--kubernetes-stale-after-ms', '1500']);
  await eventually('the zone to answer', async () => await answering(r.cache) === 1);
  const wentAway = Date.now();
  await r.api.pause('refuse');
  r.api.upsert(clusterIPService('default', 'while-away', ['10.96.0.30'], [{ name: 'http', port: 80 }]));
  // Within the bound: the last known state answers, nothing goes upstream.
  for (let i = 0; i < 5; i++) {
    const p = (await r.cache.ask('web.default.svc.cluster.local', 'A')).packet;
    if (Date.now() - wentAway < 1300) t.deepEqual(data(p), ['10.96.0.20']);
    await sleep(200);
  }
  t.is(r.kubeDns.count('web.default.svc.cluster.local'), 0);
  await eventually('the zone to stop answering', async () => await answering(r.cache) === 0, 5000);
  const staleAfter = Date.now() - wentAway;
  t.true(staleAfter >= 1400, `forwarding began ${staleAfter} ms after the API server went away`);
  t.deepEqual(data((await r.cache.ask('web.default.svc.cluster.local', 'A')).packet), ['10.96.99.99'], 'kube-dns answers now');
  t.true(r.logs.some((l) => /unreachable for longer than the staleness bound/.test(l.msg)));
  await r.api.resume();
  await eventually('the zone to answer again', async () => await answering(r.cache) === 1);
  t.deepEqual(data((await r.cache.ask('web.default.svc.cluster.local', 'A')).packet), ['10.96.0.20']);
  await eventually('the Service made while away', async () => data((await r.cache.ask('while-away.default.svc.cluster.local', 'A')).packet).join() === '10.96.0.30', 3000);
});

test('a relist after 410 Gone keeps answering throughout', async (t) => {
  const r = await rig(t);
  for (let i = 0; i < 200; i++) r.api.upsert(clusterIPService('default', `svc-${i}`, [`10.96.1.${i}`], [{ name: 'http', port: 80 }]));
  await eventually('the zone to answer', async () => await answering(r.cache) === 1);
  await eventually('every Service', async () => (await r.cache.ask('svc-199.default.svc.cluster.local', 'A')).packet.rcode === 'NOERROR');
  let stop = false;
  const seen: string[] = [];
  const asking = (async () => {
    while (!stop) {
      const p = (await r.cache.ask('svc-7.default.svc.cluster.local', 'A')).packet;
      seen.push(`${p.rcode} ${data(p).join()}`);
      await sleep(2);
    }
  })();
  const lists = r.api.requests.filter((q) => !q.watch).length;
  r.api.remove({ kind: 'Service', namespace: 'default', name: 'svc-9' });
  r.api.compact();
  r.api.cutStreams();
  await eventually('a relist', () => r.api.requests.filter((q) => !q.watch).length > lists);
  await eventually('the deletion during the gap', async () => (await r.cache.ask('svc-9.default.svc.cluster.local', 'A')).packet.rcode === 'NXDOMAIN');
  await sleep(300);
  stop = true;
  await asking;
  t.true(seen.length > 20, `${seen.length} queries during the relist`);
  t.deepEqual([...new Set(seen)], ['NOERROR 10.96.1.7'], 'every answer during the relist came from the watcher');
  t.is(r.kubeDns.udpQueries + r.kubeDns.tcpQueries, 0);
  t.is(await answering(r.cache), 1);
});

test('reload keeps a watcher whose source is unchanged; a kubeconfig that cannot be read is refused with the old config kept', async (t) => {
  const api = await TestApiServer.start();
  api.upsert(namespace('default'));
  api.upsert(clusterIPService('default', 'web', ['10.96.0.20'], [{ name: 'http', port: 80 }]));
  const cfg = join(dir, 'reload.yaml');
  const write = (kubeconfig: string, ttl: number): void => writeFileSync(cfg, `listen: [127.0.0.1:0]
zones:
  - suffix: cluster.local
    upstreams: [k8s:${kubeconfig}]
    kubernetes: {ttl: ${ttl}}
`);
  write(api.kubeconfigPath(), 5);
  const cache = await startTestCache(['--config', cfg], { kube: { tuning } });
  t.teardown(async () => {
    await cache.stop();
    await api.close();
  });
  await eventually('the zone to answer', async () => await answering(cache) === 1);
  const lists = api.requests.filter((q) => !q.watch).length;
  write(api.kubeconfigPath(), 17);
  t.true(await cache.reload());
  t.is((await cache.ask('web.default.svc.cluster.local', 'A')).packet.answers?.[0]?.ttl, 17, 'the new TTL applies at once');
  t.is(api.requests.filter((q) => !q.watch).length, lists, 'no relist: the watcher was kept');
  write(join(dir, 'missing.kubeconfig'), 5);
  t.false(await cache.reload());
  t.is(await cache.metric('coredns_reload_failed_total'), 1);
  t.is((await cache.ask('web.default.svc.cluster.local', 'A')).packet.answers?.[0]?.ttl, 17, 'the previous config stays');
});

test('a kubeconfig that cannot be read stops start-up with a clear error; k8s: entries are checked', async (t) => {
  const e = await t.throwsAsync(startTestCache(['--zone', `cluster.local=k8s:${join(dir, 'nope')},192.0.2.53`]));
  t.regex(e.message, /zone cluster\.local: k8s:.*nope: cannot load kubeconfig/);
  const e2 = await t.throwsAsync(startTestCache(['--zone', 'cluster.local=k8s:,k8s:in-cluster,192.0.2.53', '--zone', '.=k8s:in-cluster']));
  t.regex(e2.message, /want k8s:KUBECONFIG/);
  t.regex(e2.message, /needs the cluster's domain/);
});
