// Malformed Services and EndpointSlices: every problem is named, the object
// is skipped, the last good version stays in force, everything else works.
import test from 'ava';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { validateEndpointSlice, validateService } from '../proxy/validate.ts';
import { endpoint as ep, newTracker, recordingLogger, service, slice, upserts } from './fixtures/proxy/objects.ts';

const good = () => service('web', {
  type: 'LoadBalancer', clusterIP: '172.30.0.1', externalIPs: ['192.0.2.1'],
  loadBalancerSourceRanges: ['10.0.0.0/8'],
  sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
  ports: [{ name: 'http', port: 80, nodePort: 30080 }],
}, { status: { loadBalancer: { ingress: [{ ip: '203.0.113.1' }, { hostname: 'lb.example' }] } } });

function bad(edit: (s: V1Service) => void): V1Service {
  const s = good();
  edit(s);
  return s;
}

const serviceCases: [string, V1Service, RegExp[]][] = [
  ['missing name', bad((s) => delete s.metadata!.name), [/metadata\.name is missing/]],
  ['missing namespace', bad((s) => delete s.metadata!.namespace), [/metadata\.namespace is missing/]],
  ['missing spec', bad((s) => delete s.spec), [/spec is missing/]],
  ['bad type', bad((s) => { s.spec!.type = 'Magic'; }), [/spec\.type "Magic"/]],
  ['bad clusterIP', bad((s) => { s.spec!.clusterIP = '172.30.0.300'; }), [/spec\.clusterIP "172\.30\.0\.300" is not an IP/]],
  ['bad clusterIPs', bad((s) => { s.spec!.clusterIPs = ['172.30.0.1', 'nope']; }), [/spec\.clusterIPs\[1\] "nope"/]],
  ['two IPv4 clusterIPs', bad((s) => { s.spec!.clusterIPs = ['172.30.0.1', '172.30.0.2']; }), [/more than one IPv4/]],
  ['no ports', bad((s) => { s.spec!.ports = []; }), [/spec\.ports is empty/]],
  ['port 0', bad((s) => { s.spec!.ports![0].port = 0; }), [/spec\.ports\[0\] \(http\)\.port 0 is not in 1-65535/]],
  // Names are data: anything the API server would refuse is refused here too, whatever the source.
  ['a port name carrying iptables syntax', bad((s) => { s.spec!.ports![0].name = 'x"\n-I PREROUTING 1 -p tcp -d 10.96.10.10 --dport 80 -j DNAT --to-destination 10.123.3.2:8080\n#'; }), [/spec\.ports\[0\]\.name .* is not a DNS-1123 label/]],
  ['a name with a newline', bad((s) => { s.metadata!.name = 'web\n-A INPUT -j DROP'; }), [/metadata\.name .* is not a DNS-1035 label/]],
  ['a namespace with a space', bad((s) => { s.metadata!.namespace = 'shop front'; }), [/metadata\.namespace "shop front" is not a DNS-1123 label/]],
  ...['a"b', 'a@b', 'a#b', 'a;b', 'a$b', 'a{b}', 'a\\b', 'dépôt', 'Web'].map((n): [string, V1Service, RegExp[]] =>
    [`the name ${JSON.stringify(n)}`, bad((s) => { s.metadata!.name = n; }), [/metadata\.name .* is not a DNS-1035 label/]]),
  ['a 300-character namespace', bad((s) => { s.metadata!.namespace = 'a'.repeat(300); }), [/metadata\.namespace "a{76}\.\.\. is not a DNS-1123 label/]],
  ['a 64-character port name', bad((s) => { s.spec!.ports![0].name = 'p'.repeat(64); }), [/spec\.ports\[0\]\.name .* is not a DNS-1123 label/]],
  ['a targetPort name that is no IANA service name', bad((s) => { s.spec!.ports![0].targetPort = 'http--x' as never; }), [/targetPort "http--x" is not a port number or an IANA service name/]],
  ['a label value with a newline', bad((s) => { s.metadata!.labels = { app: 'a\nb' }; }), [/metadata\.labels\["app"\] value "a\\nb" is not a label value/]],
  ['port 70000', bad((s) => { s.spec!.ports![0].port = 70000; }), [/\.port 70000/]],
  ['port as text', bad((s) => { (s.spec!.ports![0] as { port: unknown }).port = '80'; }), [/\.port "80"/]],
  ['bad protocol', bad((s) => { s.spec!.ports![0].protocol = 'ICMP'; }), [/protocol "ICMP" is not TCP, UDP or SCTP/]],
  ['bad nodePort', bad((s) => { s.spec!.ports![0].nodePort = 99999; }), [/nodePort 99999/]],
  ['duplicate port name', bad((s) => { s.spec!.ports!.push({ name: 'http', port: 81 }); }), [/port name "http" is used twice for TCP/]],
  ['bad externalIP', bad((s) => { s.spec!.externalIPs = ['192.0.2.x']; }), [/spec\.externalIPs\[0\]/]],
  ['externalIP with an IPv6 zone', bad((s) => { s.spec!.externalIPs = ['fe80::1%eth0']; }), [/spec\.externalIPs\[0\] "fe80::1%eth0"/]],
  ['bad LB ingress IP', bad((s) => { s.status!.loadBalancer!.ingress![0].ip = '1.2.3'; }), [/ingress\[0\]\.ip "1\.2\.3"/]],
  ['bad source range', bad((s) => { s.spec!.loadBalancerSourceRanges = ['10.0.0.0/33']; }), [/source range "10\.0\.0\.0\/33" is not a CIDR/]],
  ['bare IP as source range', bad((s) => { s.spec!.loadBalancerSourceRanges = ['10.0.0.1']; }), [/source range "10\.0\.0\.1"/]],
  ['bad source range in annotation', bad((s) => {
    delete s.spec!.loadBalancerSourceRanges;
    s.metadata!.annotations = { 'service.beta.kubernetes.io/load-balancer-source-ranges': '10.0.0.0/8,fd00::/200' };
  }), [/source range "fd00::\/200"/]],
  ['bad affinity', bad((s) => { s.spec!.sessionAffinity = 'Cookie'; }), [/sessionAffinity "Cookie"/]],
  ['bad affinity timeout', bad((s) => { s.spec!.sessionAffinityConfig!.clientIP!.timeoutSeconds = 0; }), [/timeoutSeconds 0/]],
  ['bad traffic policies', bad((s) => { s.spec!.externalTrafficPolicy = 'Global'; s.spec!.internalTrafficPolicy = 'Node'; }),
    [/externalTrafficPolicy "Global"/, /internalTrafficPolicy "Node"/]],
  ['several problems at once', bad((s) => { s.spec!.clusterIP = 'x'; s.spec!.ports![0].port = -1; s.spec!.externalIPs = ['y']; }),
    [/clusterIP "x"/, /\.port -1/, /externalIPs\[0\] "y"/]],
];

test('a well-formed Service, and the non-proxied kinds, have no problems', (t) => {
  t.deepEqual(validateService(good()), []);
  t.deepEqual(validateService(service('h', { clusterIP: 'None' })), []);
  t.deepEqual(validateService(service('e', { type: 'ExternalName', externalName: 'example.com' })), []);
  t.deepEqual(validateService(service('d', { clusterIPs: ['172.30.0.1', 'fd00::1'], clusterIP: '172.30.0.1', ports: [{ port: 1 }, { name: 'b', port: 1 }] })), []);
});

for (const [name, svc, expected] of serviceCases) {
  test(`validateService: ${name}`, (t) => {
    const problems = validateService(svc);
    t.is(problems.length, expected.length, problems.join('; '));
    for (const re of expected) t.true(problems.some((p) => re.test(p)), `${re} in ${JSON.stringify(problems)}`);
  });
}

const goodSlice = () => slice('web', 'web-1', [{ name: 'http', port: 8080, protocol: 'UDP' }], [ep('10.0.0.1', { ready: true })]);
function badSlice(edit: (s: V1EndpointSlice) => void): V1EndpointSlice {
  const s = goodSlice();
  edit(s);
  return s;
}
const sliceCases: [string, V1EndpointSlice, RegExp[]][] = [
  ['missing name', badSlice((s) => delete s.metadata!.name), [/metadata\.name is missing/]],
  ['bad addressType', badSlice((s) => { s.addressType = 'IPv5'; }), [/addressType "IPv5"/]],
  ['port out of range', badSlice((s) => { s.ports![0].port = 65536; }), [/ports\[0\] \(http\)\.port 65536/]],
  ['port as text', badSlice((s) => { (s.ports![0] as { port: unknown }).port = '8080'; }), [/\.port "8080"/]],
  ['bad protocol', badSlice((s) => { s.ports![0].protocol = 'tcp'; }), [/protocol "tcp"/]],
  ['bad address', badSlice((s) => { s.endpoints![0].addresses = ['10.0.0.256']; }), [/addresses\[0\] "10\.0\.0\.256" is not an IPv4 address/]],
  ['address with an IPv6 zone', badSlice((s) => { s.addressType = 'IPv6'; s.endpoints![0].addresses = ['fe80::1%eth0']; }), [/"fe80::1%eth0" is not an IPv6 address/]],
  ['address of the wrong family', badSlice((s) => { s.endpoints![0].addresses = ['fd00::1']; }), [/"fd00::1" is not an IPv4/]],
  ['no addresses', badSlice((s) => { s.endpoints![0].addresses = []; }), [/endpoints\[0\]\.addresses is empty/]],
  ['condition not a boolean', badSlice((s) => { (s.endpoints![0].conditions as Record<string, unknown>).ready = 'yes'; }), [/conditions\.ready "yes"/]],
  ['a slice name with a quote', badSlice((s) => { s.metadata!.name = 'web-1"'; }), [/metadata\.name "web-1\\"" is not a DNS-1123 subdomain/]],
  ['a port name with a space', badSlice((s) => { s.ports![0].name = 'h ttp'; }), [/ports\[0\]\.name "h ttp" is not a DNS-1123 label/]],
  ['a service-name label that is no Service name', badSlice((s) => { s.metadata!.labels!['kubernetes.io/service-name'] = 'Web;x'; }), [/label kubernetes\.io\/service-name "Web;x" is not a Service name/]],
  ['a nodeName with a newline', badSlice((s) => { s.endpoints![0].nodeName = 'node-a\nx'; }), [/endpoints\[0\]\.nodeName .* is not a node name/]],
  ['a zone with a space', badSlice((s) => { s.endpoints![0].zone = 'zone a'; }), [/endpoints\[0\]\.zone "zone a" is not a zone name/]],
  ['a hostname with a dot', badSlice((s) => { s.endpoints![0].hostname = 'a.b'; }), [/endpoints\[0\]\.hostname "a\.b" is not a DNS-1123 label/]],
];

test('a well-formed slice, an FQDN slice and a slice without ports have no problems', (t) => {
  t.deepEqual(validateEndpointSlice(goodSlice()), []);
  t.deepEqual(validateEndpointSlice({ ...goodSlice(), addressType: 'FQDN', endpoints: [{ addresses: ['example.com'] }] }), []);
  t.deepEqual(validateEndpointSlice({ ...goodSlice(), ports: undefined }), []);
  const noNumber = goodSlice();
  delete noNumber.ports![0].port;
  t.deepEqual(validateEndpointSlice(noNumber), [], 'a port without a number means all ports: legal, not proxied');
});

for (const [name, s, expected] of sliceCases) {
  test(`validateEndpointSlice: ${name}`, (t) => {
    const problems = validateEndpointSlice(s);
    t.is(problems.length, expected.length, problems.join('; '));
    for (const re of expected) t.true(problems.some((p) => re.test(p)), `${re} in ${JSON.stringify(problems)}`);
  });
}

test('tracker: a malformed update is logged with its name and problems; the last good version stays', (t) => {
  const { log, records } = recordingLogger();
  const tr = newTracker({ log, families: [4] });
  for (const e of upserts(good(), goodSlice(), service('db', { clusterIP: '172.30.0.2', ports: [{ port: 5432 }] }))) tr.apply(e);
  const first = tr.snapshot().state;
  t.is(first.services.get('4/default/web:http/TCP')!.clusterEndpoints.length, 0, 'slice ports are UDP, service port TCP');

  tr.apply(upserts(bad((s) => { s.spec!.clusterIP = '172.30.0.999'; s.spec!.ports![0].port = 0; }))[0]);
  tr.apply(upserts(badSlice((s) => { s.endpoints![0].addresses = ['nope']; }))[0]);
  tr.apply(upserts(service('db', { clusterIP: '172.30.0.2', ports: [{ port: 5433 }] }))[0]);
  const { state, changes } = tr.snapshot();
  t.deepEqual([...changes.services], ['4/default/db/TCP'], 'only the valid update took effect');
  t.is(state.services.get('4/default/web:http/TCP'), first.services.get('4/default/web:http/TCP'));
  t.is(state.services.get('4/default/db/TCP')!.port, 5433);

  const warnings = records.filter((r) => r.level === 40);
  t.is(warnings.length, 2);
  t.like(warnings[0], { kind: 'Service', object: 'default/web', keptPrevious: true, msg: 'invalid Service skipped' });
  t.is((warnings[0].problems as string[]).length, 2);
  t.like(warnings[1], { kind: 'EndpointSlice', object: 'default/web-1', keptPrevious: true });
  t.regex((warnings[1].problems as string[])[0], /"nope"/);
});

test('tracker: a malformed new Service is skipped, logged, and never appears', (t) => {
  const { log, records } = recordingLogger();
  const tr = newTracker({ log, families: [4] });
  for (const e of upserts(bad((s) => { s.metadata!.name = 'broken'; s.spec!.ports![0].protocol = 'XTP'; }), service('ok', { clusterIP: '172.30.0.3', ports: [{ port: 1 }] }))) tr.apply(e);
  const { state } = tr.snapshot();
  t.deepEqual([...state.services.keys()], ['4/default/ok/TCP']);
  t.like(records.find((r) => r.level === 40), { object: 'default/broken', keptPrevious: false });
});

test('tracker: deleting an object after a malformed update deletes the good version', (t) => {
  const tr = newTracker({ families: [4] });
  tr.apply(upserts(good())[0]);
  tr.snapshot();
  tr.apply(upserts(bad((s) => { s.spec!.ports![0].port = 0; }))[0]);
  tr.apply({ kind: 'Service', type: 'delete', object: good() });
  const { state, changes } = tr.snapshot();
  t.is(state.services.size, 0);
  t.deepEqual([...changes.services], ['4/default/web:http/TCP']);
});
