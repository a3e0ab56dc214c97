// The pure parts of watched zones: names and records from objects, reverse
// names, dashed addresses, the trims of what the informers keep, and the
// name table's bookkeeping as objects come and go.
import test from 'ava';
import { dashedIP, ipFromDashed, ipFromReverse, reverseName, validHostName } from '../dns-cache/kube-records.ts';
import { trimService, trimSlice } from '../dns-cache/kube-objects.ts';
import { KubeNames } from '../dns-cache/kube-names.ts';
import { parseQuery, isRejection, type Query } from '../dns-cache/wire.ts';
import { buildQuery } from './helpers/dns-server.ts';
import { clusterIPService, endpointSlice, headlessService } from './helpers/kube-dns-fixtures.ts';
import type { KubernetesObject } from '@kubernetes/client-node';

test('reverse names of IPv4 and IPv6 addresses; dashed addresses both ways', (t) => {
  t.is(reverseName('10.96.0.20'), '20.0.96.10.in-addr.arpa');
  t.is(reverseName('fd00::21'), `1.2.0.0.${'0.'.repeat(24)}0.0.d.f.ip6.arpa`);
  t.is(reverseName('not an ip'), undefined);
  t.is(dashedIP('10.244.1.6'), '10-244-1-6');
  t.is(dashedIP('fd00:244::5'), 'fd00-244--5');
  t.is(ipFromDashed('10-244-1-6'), '10.244.1.6');
  t.is(ipFromDashed('fd00-244--5'), 'fd00:244::5');
  t.is(ipFromDashed('10-244-1-600'), undefined);
  t.is(ipFromDashed('web'), undefined);
  t.is(ipFromReverse(['20', '0', '96', '10'], false), '10.96.0.20');
  t.is(ipFromReverse(['256', '0', '96', '10'], false), undefined);
  t.is(ipFromReverse(reverseName('fd00::21')!.split('.').slice(0, 32), true), 'fd00::21');
  t.true(validHostName('www.example.com.'));
  t.false(validHostName('10.0.0.1'));
  t.false(validHostName('bad name.example'));
});

test('what the informers keep: only the fields DNS reads, compact; wrong types dropped', (t) => {
  const svc = trimService(clusterIPService('default', 'web', ['10.96.0.20', 'FD00:0::20'], [{ name: 'HTTP', port: 80 }]) as unknown as KubernetesObject);
  const none = { ips: undefined, headless: undefined, externalName: undefined, ports: undefined, publishNotReady: undefined };
  t.deepEqual(svc, {
    ...none, metadata: { name: 'web', namespace: 'default', resourceVersion: undefined }, ips: '10.96.0.20 fd00::20', ports: 'http/tcp/80',
  });
  t.deepEqual(trimService(headlessService('default', 'db', [], true) as unknown as KubernetesObject), {
    ...none, metadata: { name: 'db', namespace: 'default', resourceVersion: undefined }, headless: true, publishNotReady: true,
  });
  const slice = trimSlice(endpointSlice('default', 'db', 'a', [{ ip: '10.244.0.5', hostname: 'db-0' }, { ip: '10.244.0.6', ready: false }, { ip: '10.244.0.7', hostname: 'Not_A Label' }], [{ name: 'pg', port: 5432 }]) as unknown as KubernetesObject);
  t.is(slice.endpoints, '10.244.0.5/db-0 -10.244.0.6 10.244.0.7');
  t.is(slice.service, 'db');
  const odd = trimSlice({ metadata: { name: 's', namespace: 'n', labels: { 'kubernetes.io/service-name': 7 } }, addressType: 'IPv4', endpoints: 'x', ports: [{ port: '80' }] } as unknown as KubernetesObject);
  t.is(odd.service, undefined);
  t.is(odd.endpoints, undefined);
  t.is(odd.ports, '//');
  t.is(trimSlice({ metadata: { name: 'f' }, addressType: 'FQDN', endpoints: [{ addresses: ['example.com'] }] } as unknown as KubernetesObject).endpoints, undefined);
});

function q(name: string, type: string): { msg: Buffer; q: Query } {
  const msg = buildQuery(name, type);
  const parsed = parseQuery(msg);
  if (isRejection(parsed)) throw new Error(parsed.reason);
  return { msg, q: parsed };
}

test('names come and go with their objects; slices only matter to headless Services; namespaces by reference', (t) => {
  const names = new KubeNames('cluster.local', { ttl: 5, pods: true });
  const rcode = (name: string, type = 'A'): number | undefined => {
    const { msg, q: parsed } = q(name, type);
    return names.lookup(msg, parsed)?.rcode;
  };
  const svc = trimService(headlessService('ns1', 'db', [{ name: 'pg', port: 5432 }]) as unknown as KubernetesObject);
  names.upsertService(svc);
  t.is(rcode('db.ns1.svc.cluster.local'), 3, 'headless without endpoints: NXDOMAIN');
  t.is(rcode('ns1.svc.cluster.local'), 3, 'a Service without names does not make its namespace exist');
  const slice = trimSlice(endpointSlice('ns1', 'db', 'a', [{ ip: '10.244.0.5', hostname: 'db-0' }], [{ name: 'pg', port: 5432 }]) as unknown as KubernetesObject);
  names.upsertSlice(slice);
  t.is(rcode('db.ns1.svc.cluster.local'), 0);
  t.is(rcode('db-0.db.ns1.svc.cluster.local'), 0);
  t.is(rcode('_pg._tcp.db.ns1.svc.cluster.local', 'SRV'), 0);
  t.is(rcode('5.0.244.10.in-addr.arpa', 'PTR'), 0);
  t.is(rcode('ns1.svc.cluster.local'), 0, 'now the namespace name exists (NODATA)');
  const before = names.size.names;
  names.deleteSlice(slice);
  t.is(rcode('db-0.db.ns1.svc.cluster.local'), 3);
  t.is(names.lookup(...Object.values(q('5.0.244.10.in-addr.arpa', 'PTR')) as [Buffer, Query]), undefined, 'the PTR is gone (not this zone\'s any more)');
  t.true(names.size.names < before);
  names.upsertNamespace({ metadata: { name: 'ns1' } });
  names.deleteService(svc);
  t.is(rcode('ns1.svc.cluster.local'), 0, 'the namespace itself keeps its name');
  names.deleteNamespace({ metadata: { name: 'ns1' } });
  t.is(rcode('ns1.svc.cluster.local'), 3);
  t.is(names.size.names, 4, 'only the zone\'s own names are left (apex, svc, pod, dns-version)');
  // Labels that cannot be names, and an ExternalName that is an address: no names.
  names.upsertService(trimService(clusterIPService('default', 'Bad_Name!', ['10.96.0.1'], [{ name: 'http', port: 80 }]) as unknown as KubernetesObject));
  names.upsertService(trimService({ metadata: { name: 'e', namespace: 'default' }, spec: { type: 'ExternalName', externalName: '192.0.2.1' } } as unknown as KubernetesObject));
  t.is(names.size.names, 4);
  t.is(rcode('e.default.svc.cluster.local'), 3);
  // One pod address behind two headless Services: two PTRs; one left when a Service goes.
  for (const n of ['a', 'b']) {
    names.upsertService(trimService(headlessService('ns2', n, []) as unknown as KubernetesObject));
    names.upsertSlice(trimSlice(endpointSlice('ns2', n, 'x', [{ ip: '10.244.7.7' }], []) as unknown as KubernetesObject));
  }
  const ptr = (): number => names.lookup(...Object.values(q('7.7.244.10.in-addr.arpa', 'PTR')) as [Buffer, Query])?.an ?? -1;
  t.is(ptr(), 2);
  names.deleteService(trimService(headlessService('ns2', 'a', []) as unknown as KubernetesObject));
  t.is(ptr(), 1);
});
