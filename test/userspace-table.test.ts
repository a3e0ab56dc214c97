// The forwarder's table: validation lists every problem, routes and source
// ranges pick the right endpoints for a client, address sets match CIDRs.
import test from 'ava';
import { AddressSet, ipv4Value } from '../modes/userspace/address-match.ts';
import { refusesAll, routeFor, sourceAllowed, validateTable, type ListenerSpec } from '../modes/userspace/table.ts';
import { KproxyError } from '../lib/errors.ts';

const listener = (over: Partial<ListenerSpec> = {}): ListenerSpec => ({
  ip: '10.96.0.10', port: 80, protocol: 'TCP', service: 'default/web:http', algorithm: 'rr', affinitySeconds: 0, sourceRanges: [],
  remote: { endpoints: [{ ip: '10.180.0.11', port: 8080 }], whenEmpty: 'reject' }, ...over,
});

test('a valid table comes back as a clean copy', (t) => {
  const input = { clusterSources: ['192.168.50.1/32'], listeners: [listener(), listener({ protocol: 'UDP', fromCluster: { endpoints: [], whenEmpty: 'drop' } })], extra: 1 };
  const table = validateTable(JSON.parse(JSON.stringify(input)));
  t.is(table.listeners.length, 2);
  t.deepEqual(table.listeners[1].fromCluster, { endpoints: [], whenEmpty: 'drop' });
  t.false('extra' in table);
});

test('every problem of a bad table is listed in one error', (t) => {
  const bad = {
    clusterSources: ['nonsense'],
    listeners: [
      listener({ ip: '10.96.0.300' }),
      listener({ port: 0, protocol: 'SCTP' as 'TCP', algorithm: 'wrr' as 'rr' }),
      listener({ sourceRanges: ['2001:db8::/32'] }),
      listener({ remote: { endpoints: [{ ip: 'fd00::1', port: 80 }], whenEmpty: 'maybe' as 'drop' } }),
      listener({ protocol: 'UDP', ip: '0.0.0.0' }),
      listener(),
      listener(),
      'not a listener',
    ],
  };
  const e = t.throws(() => validateTable(bad), { instanceOf: KproxyError });
  t.is(e.code, 'KPROXY_FORWARDER_TABLE_INVALID');
  for (const part of ['clusterSources: not a CIDR', 'listeners[0].ip', 'listeners[1].port', 'listeners[1].protocol', 'listeners[1].algorithm',
    'listeners[2].sourceRanges', 'listeners[3].remote.endpoints[0]', 'listeners[3].remote.whenEmpty', 'listeners[4].ip: a UDP listener', 'listeners[6]: TCP/10.96.0.10:80 appears twice', 'listeners[7]']) {
    t.true(e.message.includes(part), part);
  }
  t.throws(() => validateTable(null), { message: /must be an object/ });
  t.throws(() => validateTable({ clusterSources: [], listeners: {} }), { message: /listeners: must be a list/ });
});

test('clients on the node take the node-local route; source ranges allow or not', (t) => {
  const l = listener({ fromCluster: { endpoints: [{ ip: '10.180.0.12', port: 8080 }], whenEmpty: 'reject' }, sourceRanges: ['192.168.50.0/24'] });
  t.is(routeFor(l, '10.180.0.5', ['10.180.0.0/24']).endpoints[0].ip, '10.180.0.12');
  t.is(routeFor(l, '203.0.113.9', ['10.180.0.0/24']).endpoints[0].ip, '10.180.0.11');
  t.true(sourceAllowed(l, '192.168.50.2'));
  t.false(sourceAllowed(l, '192.168.51.2'));
  t.true(refusesAll(listener({ remote: { endpoints: [], whenEmpty: 'reject' } })));
  t.false(refusesAll(listener({ remote: { endpoints: [], whenEmpty: 'drop' } })));
  t.false(refusesAll(listener({ remote: { endpoints: [], whenEmpty: 'reject' }, fromCluster: { endpoints: [{ ip: '10.180.0.12', port: 1 }], whenEmpty: 'reject' } })));
});

test('address sets match IPv4, IPv6 and IPv4-mapped clients', (t) => {
  t.is(ipv4Value('10.1.2.3'), 0x0a010203);
  for (const bad of ['10.1.2', '10.1.2.256', '1.2.3.4.5', 'a.b.c.d', '', '1..2.3']) t.is(ipv4Value(bad), -1, bad);
  const s = new AddressSet(['10.0.0.0/8', '192.168.50.2/32', '2001:db8::/32', 'fd00::1/128', '172.16.0.0/12']);
  t.true(s.has('10.255.0.1'));
  t.true(s.has('192.168.50.2'));
  t.false(s.has('192.168.50.3'));
  t.true(s.has('172.31.255.255'));
  t.false(s.has('172.32.0.0'));
  t.true(s.has('2001:db8:1::5'));
  t.false(s.has('2001:db9::5'));
  t.true(s.has('fd00::1'));
  t.false(s.has('fd00::2'));
  t.true(s.has('::ffff:10.9.9.9'));
  t.false(s.has('not an address'));
  const all = new AddressSet(['0.0.0.0/0', '::/0']);
  t.true(all.has('8.8.8.8'));
  t.true(all.has('2001:4860::8888'));
  t.true(new AddressSet(['::ffff:10.0.0.0/104']).has('::ffff:10.1.1.1'));
});
