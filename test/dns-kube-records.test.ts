// Zones answered from Kubernetes API servers: two clusters, each with its
// own list/watch test API server and its own "kube-dns" (a test DNS server
// that counts what reaches it), real DNS queries over UDP and TCP. Every
// record kind of the Kubernetes DNS specification, in the shapes CoreDNS's
// kubernetes plugin answers with, and not one query upstream for them.
import test from 'ava';
import { TestApiServer } from './helpers/apiserver.ts';
import { TestDnsServer, startTestCache, buildQuery, rawUdp, type Decoded, type TestCache } from './helpers/dns-server.ts';
import {
  clusterIPService, endpointSlice, externalNameService, headlessService, namespace,
} from './helpers/kube-dns-fixtures.ts';

let apiA: TestApiServer;
let apiB: TestApiServer;
let dnsA: TestDnsServer;
let dnsB: TestDnsServer;
let outside: TestDnsServer;
let cache: TestCache;

const tuning = { retryInitialMs: 100, retryMaxMs: 500 };

async function eventually(what: string, ok: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.before(async () => {
  apiA = await TestApiServer.start();
  apiB = await TestApiServer.start();
  for (const ns of ['default', 'kube-system', 'empty-ns']) apiA.upsert(namespace(ns));
  apiB.upsert(namespace('default'));
  apiA.upsert(clusterIPService('default', 'web', ['10.96.0.20'], [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }, { port: 8080 }]));
  apiA.upsert(endpointSlice('default', 'web', 'a', [{ ip: '10.244.3.3' }, { ip: '10.244.3.4', hostname: 'named' }], [{ name: 'http', port: 8080 }]));
  apiA.upsert(clusterIPService('default', 'dual', ['10.96.0.21', 'fd00::21'], [{ name: 'http', port: 80 }]));
  apiA.upsert(headlessService('default', 'headless', [{ name: 'http', port: 80 }]));
  apiA.upsert(endpointSlice('default', 'headless', 'a', [
    { ip: '10.244.1.5', hostname: 'my-pet' }, { ip: '10.244.1.6' }, { ip: '10.244.1.7', ready: false },
  ], [{ name: 'http', port: 8080 }]));
  apiA.upsert(endpointSlice('default', 'headless', 'b', [{ ip: 'fd00:244::5', hostname: 'my-pet' }], [{ name: 'http', port: 8080 }]));
  apiA.upsert(headlessService('default', 'pna', [{ name: 'http', port: 80 }], true));
  apiA.upsert(endpointSlice('default', 'pna', 'a', [{ ip: '10.244.2.9', ready: false }], [{ name: 'http', port: 80 }]));
  apiA.upsert(headlessService('default', 'empty-headless', [{ name: 'http', port: 80 }]));
  apiA.upsert(endpointSlice('default', 'empty-headless', 'a', [{ ip: '10.244.4.4', ready: false }], [{ name: 'http', port: 80 }]));
  apiA.upsert(externalNameService('default', 'ext', 'www.example.com'));
  apiA.upsert(externalNameService('default', 'ext-in', 'web.default.svc.cluster.local'));
  apiA.upsert(clusterIPService('kube-system', 'kube-dns', ['10.96.0.10'], [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }]));
  apiB.upsert(clusterIPService('default', 'web', ['10.112.0.20'], [{ name: 'http', port: 80 }]));

  dnsA = await TestDnsServer.start({ zone: ['cluster.local', 'in-addr.arpa', 'ip6.arpa'], records: { '9.9.9.10.in-addr.arpa': [{ type: 'PTR', data: 'forwarded.example' }] } });
  dnsB = await TestDnsServer.start({ zone: 'cluster-b.local' });
  outside = await TestDnsServer.start({ zone: 'example.com', records: { 'www.example.com': [{ type: 'A', data: '192.0.2.80', ttl: 300 }] }, wildcard: { type: 'A', data: '192.0.2.1', ttl: 300 } });
  cache = await startTestCache([
    '--zone', `cluster.local=k8s:${apiA.kubeconfigPath()},${dnsA.address}`,
    '--zone', `cluster-b.local=k8s:${apiB.kubeconfigPath()},${dnsB.address}`,
    '--zone', `in-addr.arpa=${dnsA.address}`, '--zone', `ip6.arpa=${dnsA.address}`,
    '--zone', `.=${outside.address}`,
  ], { kube: { tuning } });
  await eventually('both zones to answer from their API servers', async () =>
    await cache.metric('kproxy_dns_cache_kubernetes_answering') === 2);
});

test.after.always(async () => {
  await cache?.stop();
  for (const s of [dnsA, dnsB, outside]) await s?.stop();
  for (const a of [apiA, apiB]) await a?.close();
});

const data = (p: Decoded, type?: string): unknown[] => (p.answers ?? []).filter((a) => !type || a.type === type).map((a) => a.data);
const sorted = (xs: unknown[]): unknown[] => [...xs].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
const AA = 1 << 10;

async function both(name: string, type: string, check: (p: Decoded, proto: string) => void): Promise<void> {
  for (const tcp of [false, true]) check((await cache.ask(name, type, { tcp, edns: 1232 })).packet, tcp ? 'tcp' : 'udp');
}

function soaDenial(t: import('ava').ExecutionContext, p: Decoded, rcode: string, apex = 'cluster.local', why = ''): void {
  t.is(p.rcode, rcode, why);
  t.is(p.answers?.length ?? 0, 0, why);
  const soa = p.authorities?.[0];
  t.is(soa?.type, 'SOA', why);
  t.is(soa?.name, apex, why);
  t.is(soa?.ttl, 5, why);
  t.is((soa?.data as { minimum?: number } | undefined)?.minimum, 5, why);
}

test('A for a ClusterIP Service, authoritative, TTL 5 (spec 2.3.1); the same over TCP; no upstream query', async (t) => {
  await both('web.default.svc.cluster.local', 'A', (p, proto) => {
    t.is(p.rcode, 'NOERROR', proto);
    t.deepEqual(data(p), ['10.96.0.20'], proto);
    t.is(p.answers?.[0]?.ttl, 5, proto);
    t.truthy((p.flags ?? 0) & AA, `${proto}: authoritative`);
  });
  t.is(dnsA.count('web.default.svc.cluster.local'), 0, 'nothing reached kube-dns');
});

test('the question is echoed as asked (any case) and the answer owner follows it', async (t) => {
  const q = buildQuery('WEB.Default.SVC.cluster.LOCAL', 'A', { id: 4321 });
  const r = await rawUdp(cache.host, cache.port, q);
  if (!r) return t.fail('no answer');
  t.is(r.readUInt16BE(0), 4321);
  t.deepEqual(r.subarray(12, q.length), q.subarray(12), 'question bytes echoed');
  const p = (await cache.ask('WEB.Default.SVC.cluster.LOCAL', 'A')).packet;
  t.is(p.answers?.[0]?.name, 'WEB.Default.SVC.cluster.LOCAL');
  t.deepEqual(data(p), ['10.96.0.20']);
});

test('every family of a Service: A and AAAA of a dual-stack ClusterIP; NODATA with the SOA for a missing family', async (t) => {
  await both('dual.default.svc.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.96.0.21']));
  await both('dual.default.svc.cluster.local', 'AAAA', (p) => t.deepEqual(data(p), ['fd00::21']));
  await both('web.default.svc.cluster.local', 'AAAA', (p, proto) => soaDenial(t, p, 'NOERROR', 'cluster.local', proto));
  await both('web.default.svc.cluster.local', 'MX', (p, proto) => soaDenial(t, p, 'NOERROR', 'cluster.local', proto));
});

test('SRV per named port (spec 2.3.2): target the Service, its address in the additional section; unnamed ports have none', async (t) => {
  await both('_http._tcp.web.default.svc.cluster.local', 'SRV', (p, proto) => {
    t.deepEqual(data(p), [{ priority: 0, weight: 100, port: 80, target: 'web.default.svc.cluster.local' }], proto);
    t.deepEqual((p.additionals ?? []).filter((a) => a.type === 'A').map((a) => [a.name, a.data]), [['web.default.svc.cluster.local', '10.96.0.20']], proto);
  });
  await both('_dns._udp.web.default.svc.cluster.local', 'SRV', (p) => t.deepEqual(data(p), [{ priority: 0, weight: 100, port: 53, target: 'web.default.svc.cluster.local' }]));
  await both('_http._udp.web.default.svc.cluster.local', 'SRV', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', proto));
  await both('_tcp.web.default.svc.cluster.local', 'SRV', (p, proto) => soaDenial(t, p, 'NOERROR', 'cluster.local', `${proto}: a name with names below it exists`));
  // CoreDNS also answers SRV on the Service name: every port, unnamed ones too.
  await both('web.default.svc.cluster.local', 'SRV', (p) => t.deepEqual(sorted(data(p).map((d) => (d as { port: number }).port)), [53, 80, 8080]));
});

test('headless Service (spec 2.4): one A/AAAA per ready endpoint, hostname records, SRV to each endpoint', async (t) => {
  await both('headless.default.svc.cluster.local', 'A', (p, proto) => t.deepEqual(sorted(data(p)), ['10.244.1.5', '10.244.1.6'], `${proto}: the not-ready endpoint is left out`));
  await both('headless.default.svc.cluster.local', 'AAAA', (p) => t.deepEqual(data(p), ['fd00:244::5']));
  await both('my-pet.headless.default.svc.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.244.1.5']));
  await both('my-pet.headless.default.svc.cluster.local', 'AAAA', (p) => t.deepEqual(data(p), ['fd00:244::5']));
  await both('10-244-1-6.headless.default.svc.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.244.1.6'], 'no hostname: the dashed address'));
  await both('10-244-1-7.headless.default.svc.cluster.local', 'A', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', `${proto}: not ready`));
  await both('_http._tcp.headless.default.svc.cluster.local', 'SRV', (p, proto) => {
    t.deepEqual(sorted(data(p)), sorted([
      { priority: 0, weight: 33, port: 8080, target: 'my-pet.headless.default.svc.cluster.local' },
      { priority: 0, weight: 33, port: 8080, target: '10-244-1-6.headless.default.svc.cluster.local' },
    ]), proto);
    t.deepEqual(sorted((p.additionals ?? []).filter((a) => a.type === 'A' || a.type === 'AAAA').map((a) => `${a.name} ${String(a.data)}`)), [
      '10-244-1-6.headless.default.svc.cluster.local 10.244.1.6',
      'my-pet.headless.default.svc.cluster.local 10.244.1.5',
      'my-pet.headless.default.svc.cluster.local fd00:244::5',
    ], proto);
  });
  await both('pna.default.svc.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.244.2.9'], 'publishNotReadyAddresses: not-ready endpoints too'));
  await both('empty-headless.default.svc.cluster.local', 'A', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', `${proto}: no ready endpoint (spec: NXDOMAIN)`));
});

test('an endpoint of a ClusterIP Service by hostname or dashed address (as CoreDNS)', async (t) => {
  await both('named.web.default.svc.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.244.3.4']));
  await both('10-244-3-3.web.default.svc.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.244.3.3']));
  await both('10-244-3-3.web.default.svc.cluster.local', 'AAAA', (p, proto) => soaDenial(t, p, 'NOERROR', 'cluster.local', proto));
  await both('other.web.default.svc.cluster.local', 'A', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', proto));
});

test('PTR for ClusterIPs and headless endpoints (spec 2.3.3, 2.4.3), each address answered by its own cluster', async (t) => {
  const before = dnsA.count('20.0.96.10.in-addr.arpa') + dnsA.count('20.0.112.10.in-addr.arpa');
  await both('20.0.96.10.in-addr.arpa', 'PTR', (p) => t.deepEqual(data(p), ['web.default.svc.cluster.local']));
  await both('5.1.244.10.in-addr.arpa', 'PTR', (p) => t.deepEqual(data(p), ['my-pet.headless.default.svc.cluster.local']));
  await both('6.1.244.10.in-addr.arpa', 'PTR', (p) => t.deepEqual(data(p), ['10-244-1-6.headless.default.svc.cluster.local']));
  const v6 = '1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa';
  await both(v6, 'PTR', (p) => t.deepEqual(data(p), ['dual.default.svc.cluster.local']));
  await both('20.0.112.10.in-addr.arpa', 'PTR', (p) => t.deepEqual(data(p), ['web.default.svc.cluster-b.local'], 'cluster B\'s address, from cluster B'));
  await both('20.0.96.10.in-addr.arpa', 'A', (p, proto) => soaDenial(t, p, 'NOERROR', 'in-addr.arpa', `${proto}: a known address asked for another type`));
  await both(v6, 'TXT', (p, proto) => soaDenial(t, p, 'NOERROR', 'ip6.arpa', proto));
  t.is(dnsA.count('20.0.96.10.in-addr.arpa') + dnsA.count('20.0.112.10.in-addr.arpa'), before, 'no reverse query went upstream');
  // An address no watcher knows goes where the reverse zone is configured.
  const fwd = (await cache.ask('9.9.9.10.in-addr.arpa', 'PTR')).packet;
  t.deepEqual(data(fwd), ['forwarded.example']);
  t.is(dnsA.count('9.9.9.10.in-addr.arpa'), 1);
});

test('ExternalName (spec 2.5): a CNAME, the target chased through the cache (outside the zone) or the watcher (inside)', async (t) => {
  await both('ext.default.svc.cluster.local', 'CNAME', (p) => t.deepEqual(data(p), ['www.example.com']));
  const before = outside.count('www.example.com', 'A');
  await both('ext.default.svc.cluster.local', 'A', (p, proto) => {
    t.deepEqual(p.answers?.map((a) => [a.name, a.type, a.data]), [
      ['ext.default.svc.cluster.local', 'CNAME', 'www.example.com'],
      ['www.example.com', 'A', '192.0.2.80'],
    ], proto);
    t.is(p.answers?.[0]?.ttl, 5);
  });
  t.is(outside.count('www.example.com', 'A') - before, 1, 'the target was asked once, then served from the cache');
  await both('ext-in.default.svc.cluster.local', 'A', (p) => t.deepEqual(p.answers?.map((a) => [a.type, a.data]), [
    ['CNAME', 'web.default.svc.cluster.local'], ['A', '10.96.0.20'],
  ]));
});

test('dns-version TXT (spec 2.2), the apex SOA, and names that exist without records (NODATA)', async (t) => {
  await both('dns-version.cluster.local', 'TXT', (p) => {
    t.deepEqual(data(p).map((d) => (d as Buffer[]).map(String)), [['1.1.0']]);
  });
  await both('cluster.local', 'SOA', (p) => {
    t.is(p.answers?.[0]?.type, 'SOA');
    t.like(p.answers?.[0]?.data as object, { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', minimum: 5 });
  });
  for (const name of ['cluster.local', 'svc.cluster.local', 'default.svc.cluster.local', 'empty-ns.svc.cluster.local', 'pod.cluster.local']) {
    await both(name, 'A', (p, proto) => soaDenial(t, p, 'NOERROR', 'cluster.local', `${proto} ${name}`));
  }
});

test('NXDOMAIN with the SOA for everything else under the zone, with nothing sent upstream', async (t) => {
  const names = [
    'nope.default.svc.cluster.local', // no such Service
    'web.no-such-ns.svc.cluster.local', // no such namespace
    'no-such-ns.svc.cluster.local',
    'a.b.c.web.default.svc.cluster.local', // too many labels under svc
    'x._http._tcp.web.default.svc.cluster.local',
    'web.default.cluster.local', 'foo.cluster.local', // neither svc nor pod
    'api.example.com.default.svc.cluster.local', 'api.example.com.svc.cluster.local', 'api.example.com.cluster.local',
  ];
  for (const name of names) {
    for (const type of ['A', 'AAAA', 'SRV']) await both(name, type, (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', `${proto} ${name} ${type}`));
  }
  t.deepEqual(names.filter((n) => dnsA.count(n) > 0), [], 'kube-dns saw none of them');
});

test('pod records (spec 2.6): <a-b-c-d>.<ns>.pod.<zone> for an existing namespace', async (t) => {
  await both('10-244-1-5.default.pod.cluster.local', 'A', (p) => t.deepEqual(data(p), ['10.244.1.5']));
  await both('fd00-244--5.default.pod.cluster.local', 'AAAA', (p) => t.deepEqual(data(p), ['fd00:244::5']));
  await both('10-244-1-5.no-such-ns.pod.cluster.local', 'A', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', proto));
  await both('not-an-ip.default.pod.cluster.local', 'A', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster.local', proto));
});

test('the second cluster\'s zone is answered by its own watcher', async (t) => {
  await both('web.default.svc.cluster-b.local', 'A', (p) => t.deepEqual(data(p), ['10.112.0.20']));
  await both('web.default.svc.cluster-b.local', 'AAAA', (p, proto) => soaDenial(t, p, 'NOERROR', 'cluster-b.local', proto));
  await both('nope.default.svc.cluster-b.local', 'A', (p, proto) => soaDenial(t, p, 'NXDOMAIN', 'cluster-b.local', proto));
  t.is(dnsB.udpQueries + dnsB.tcpQueries, 0);
});

test('the search-path expansions of an outside name cause no upstream query; the name itself is forwarded', async (t) => {
  // A pod in namespace "default" with ndots:5 resolves api.example.com: A
  // and AAAA for each search domain, then the name itself.
  const search = ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'];
  for (const tcp of [false, true]) {
    for (const s of search) {
      const [a, aaaa] = await Promise.all(['A', 'AAAA'].map((type) => cache.ask(`api.example.com.${s}`, type, { tcp })));
      t.is(a.packet.rcode, 'NXDOMAIN');
      t.is(aaaa.packet.rcode, 'NXDOMAIN');
    }
    const final = await cache.ask('api.example.com', 'A', { tcp });
    t.deepEqual(data(final.packet), ['192.0.2.1']);
  }
  t.deepEqual(search.filter((s) => dnsA.count(`api.example.com.${s}`) > 0), [], 'kube-dns saw none of the expansions');
  t.is(outside.count('api.example.com', 'A'), 1, 'the name itself went upstream once, then came from the cache');
});

test('answers by source are counted: watcher, cache, upstream', async (t) => {
  await cache.ask('web.default.svc.cluster.local', 'A');
  await cache.ask('counted.example.com', 'A');
  await cache.ask('counted.example.com', 'A');
  t.true(await cache.metric('kproxy_dns_cache_answers_total', { zone: 'cluster.local.', source: 'watcher' }) > 0);
  t.true(await cache.metric('kproxy_dns_cache_answers_total', { zone: '.', source: 'upstream' }) > 0);
  t.true(await cache.metric('kproxy_dns_cache_answers_total', { zone: '.', source: 'cache' }) > 0);
  t.is(await cache.metric('kproxy_dns_cache_kubernetes_objects', { zone: 'cluster.local.', kind: 'services' }), 8);
  t.is(await cache.metric('kproxy_dns_cache_kubernetes_objects', { zone: 'cluster.local.', kind: 'namespaces' }), 3);
});
