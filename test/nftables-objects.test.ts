// The typed nftables commands: each renders to one line that parses back to
// the same value, and invalid input is refused with a clear error before
// anything reaches nft.
import test from 'ava';
import { formatTimeout, parseCommand, parseTimeout, render, Transaction, type Command } from '../modes/nftables/objects.ts';

const w = { family: 'ip', table: 'kproxy' } as const;

const samples: [Command, string][] = [
  [{ verb: 'add', object: 'table', ...w }, 'add table ip kproxy'],
  [{ verb: 'flush', object: 'table', family: 'ip6', table: 'kproxy' }, 'flush table ip6 kproxy'],
  [{ verb: 'add', object: 'chain', ...w, name: 'svc-ABCDEFGH-ns/web/tcp/http' }, 'add chain ip kproxy svc-ABCDEFGH-ns/web/tcp/http'],
  [{ verb: 'add', object: 'chain', ...w, name: 'filter-prerouting', base: { type: 'filter', hook: 'prerouting', priority: 'dstnat - 10' } },
    'add chain ip kproxy filter-prerouting { type filter hook prerouting priority dstnat - 10 ; policy accept ; }'],
  [{ verb: 'delete', object: 'chain', ...w, name: 'cluster-3' }, 'delete chain ip kproxy cluster-3'],
  [{ verb: 'add', object: 'rule', ...w, chain: 'c', rule: 'ip saddr != { 10.0.0.0/8, 10.1.0.0/16 } jump mark-for-masquerade' },
    'add rule ip kproxy c ip saddr != { 10.0.0.0/8, 10.1.0.0/16 } jump mark-for-masquerade'],
  [{ verb: 'add', object: 'map', ...w, name: 'endpoints-tcp', spec: { keyword: 'typeof', key: 'ip daddr . tcp dport . numgen random mod 1', data: 'ip daddr . tcp dport' } },
    'add map ip kproxy endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }'],
  [{ verb: 'add', object: 'set', ...w, name: 'aff-X-10.1.0.1/80', spec: { keyword: 'type', key: 'ipv4_addr', size: 65535, flags: ['dynamic', 'timeout'], timeout: 10800 } },
    'add set ip kproxy aff-X-10.1.0.1/80 { type ipv4_addr ; size 65535 ; flags dynamic,timeout ; timeout 3h ; }'],
  [{ verb: 'add', object: 'element', family: 'ip6', table: 'kproxy', set: 'endpoints-udp', elements: [{ key: 'fd00::1 . 53 . 0', value: 'fd00:244::2 . 5353' }, { key: 'fd00::1 . 53 . 1', value: 'fd00:244::3 . 5353' }] },
    'add element ip6 kproxy endpoints-udp { fd00::1 . 53 . 0 : fd00:244::2 . 5353, fd00::1 . 53 . 1 : fd00:244::3 . 5353 }'],
  [{ verb: 'delete', object: 'element', ...w, set: 'service-ips', elements: [{ key: '10.96.0.1 . tcp . 80' }] }, 'delete element ip kproxy service-ips { 10.96.0.1 . tcp . 80 }'],
  [{ verb: 'add', object: 'element', ...w, set: 'service-ips', elements: [{ key: '10.96.0.1 . tcp . 80', value: 'goto cluster-2' }] }, 'add element ip kproxy service-ips { 10.96.0.1 . tcp . 80 : goto cluster-2 }'],
];

for (const [cmd, line] of samples) {
  test(`renders and parses back: ${line.slice(0, 60)}`, (t) => {
    t.is(render(cmd), line);
    t.deepEqual(parseCommand(line), cmd);
  });
}

test('invalid commands are refused with the reason', (t) => {
  t.throws(() => render({ verb: 'add', object: 'chain', ...w, name: '1bad' }), { message: /invalid chain name "1bad"/ });
  t.throws(() => render({ verb: 'add', object: 'rule', ...w, chain: 'c', rule: 'accept; flush ruleset' }), { message: /invalid rule/ });
  t.throws(() => render({ verb: 'add', object: 'rule', ...w, chain: 'c', rule: 'ip daddr { 1.2.3.4' }), { message: /unbalanced/ });
  t.throws(() => render({ verb: 'add', object: 'map', ...w, name: 'm', spec: { keyword: 'type', key: 'ipv4_addr' } }), { message: /a map needs data/ });
  t.throws(() => render({ verb: 'add', object: 'element', ...w, set: 's', elements: [{ key: '1.2.3.4, 5.6.7.8' }] }), { message: /invalid element key/ });
  t.throws(() => render({ verb: 'add', object: 'element', ...w, set: 's', elements: [] }), { message: /no elements/ });
  t.throws(() => render({ verb: 'delete', object: 'element', ...w, set: 's', elements: [{ key: 'a', value: 'b' }] }), { message: /keys only/ });
  t.throws(() => parseCommand('add rulez ip kproxy c accept'), { message: /cannot parse/ });
  t.throws(() => parseCommand('add chain ip kproxy c { type nat hook sideways priority 0 ; policy accept ; }'), { message: /invalid hook/ });
});

test('a transaction keeps the first error and renders nothing after it', (t) => {
  const tx = new Transaction();
  tx.add({ verb: 'add', object: 'table', ...w });
  tx.add({ verb: 'add', object: 'chain', ...w, name: '-x' });
  tx.add({ verb: 'add', object: 'chain', ...w, name: '-y' });
  t.regex(String(tx.error?.message), /"-x"/);
  t.is(tx.size, 1);
  t.is(tx.toString(), 'add table ip kproxy\n');
});

test('timeouts use nft notation both ways', (t) => {
  for (const [s, text] of [[10800, '3h'], [100, '1m40s'], [86461, '1d1m1s'], [5, '5s']] as const) {
    t.is(formatTimeout(s), text);
    t.is(parseTimeout(text), s);
  }
  t.throws(() => parseTimeout('3x'));
});
