// lib/net.ts: the address helpers every renderer's last check relies on.
import test from 'ava';
import { isIP } from 'node:net';
import { cidrFamily, ipFamily } from '../lib/net.ts';

test('ipFamily agrees with net.isIP on IPv4 text, near misses included', (t) => {
  const cases = [
    '1.2.3.4', '0.0.0.0', '255.255.255.255', '10.96.0.10', '1.2.3.0', '100.200.250.249',
    '256.1.1.1', '01.2.3.4', '1.2.3.04', '1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.4 ', ' 1.2.3.4', 'a.b.c.d',
    '', '1.2.3.', '.1.2.3', '999.1.1.1', '1.2.3.4/32', '1.2.3.4\n', '1.2.3.4:80', '1.2.3.1000', '0x1.2.3.4',
  ];
  for (const c of cases) t.is(ipFamily(c) as number, isIP(c), JSON.stringify(c));
  // Every spelling of a sample of addresses, leading zeros and out-of-range parts included.
  let disagreements = 0;
  for (let i = 0; i < 50_000; i++) {
    const part = (n: number): string => (n % 11 === 0 ? `0${n % 10}` : String(n % 300));
    const c = `${part(i)}.${part(i * 7)}.${part(i * 13)}.${part(i * 31)}`;
    if (ipFamily(c) !== isIP(c)) disagreements++;
  }
  t.is(disagreements, 0);
});

test('ipFamily: IPv6 as net.isIP says, a zone or anything else is no address', (t) => {
  t.is(ipFamily('::1'), 6);
  t.is(ipFamily('fd00:96::22'), 6);
  t.is(ipFamily('::ffff:1.2.3.4'), 6);
  t.is(ipFamily('fe80::1%eth0'), 0);
  t.is(ipFamily('1.2.3.4%eth0'), 0);
  t.is(ipFamily('fd00::/64'), 0);
  t.is(ipFamily('x"\n-A INPUT -j DROP'), 0);
});

test('cidrFamily: a prefix length within the family, nothing else', (t) => {
  t.is(cidrFamily('10.0.0.0/8'), 4);
  t.is(cidrFamily('10.0.0.0/33'), 0);
  t.is(cidrFamily('fd00::/128'), 6);
  t.is(cidrFamily('fd00::/129'), 0);
  t.is(cidrFamily('10.0.0.0'), 0);
  t.is(cidrFamily('10.0.0.0/8 '), 0);
});
