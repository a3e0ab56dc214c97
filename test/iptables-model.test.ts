// The typed rule model, chain naming, and the fake kernel's own rules
// (what it refuses, as the real tool does).
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { FakeKernel } from '../modes/iptables/fake-kernel.ts';
import { portProtoHash, sepChain, svcChain } from '../modes/iptables/names.ts';
import { parseRule, quote, renderRule, RuleSyntaxError, tokenize } from '../modes/iptables/rule.ts';

test('chain names are the ones kube-proxy gives the same Service ports', (t) => {
  // As seen in kube-proxy's iptables-save output on real clusters.
  t.is(svcChain('default/kubernetes:https', 'TCP'), 'KUBE-SVC-NPX46M4PTMTKRN6Y');
  t.is(svcChain('kube-system/kube-dns:dns', 'UDP'), 'KUBE-SVC-TCOU7JCQXEZGVUNU');
  t.is(svcChain('kube-system/kube-dns:dns-tcp', 'TCP'), 'KUBE-SVC-ERIFXISQEP7F7OF4');
  t.is(portProtoHash('ns/a:p', 'TCP').length, 16);
  t.not(sepChain('ns/a:p', 'TCP', '10.0.0.1', 80), sepChain('ns/a:p', 'TCP', '10.0.0.1', 81));
});

test('comments are quoted exactly when iptables-save quotes them', (t) => {
  t.is(quote('x'), 'x');
  t.is(quote('kube-dns_1'), 'kube-dns_1');
  t.is(quote('ns/s:p'), '"ns/s:p"');
  t.is(quote('a "b"'), '"a \\"b\\""');
  t.deepEqual(tokenize('-m comment --comment "a \\"b\\"" -j X'), ['-m', 'comment', '--comment', 'a "b"', '-j', 'X']);
});

test('every rule of every golden batch parses back to the same line', (t) => {
  const dir = new URL('./fixtures/iptables/', import.meta.url);
  let n = 0;
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.golden'))) {
    for (const line of readFileSync(new URL(f, dir), 'utf8').split('\n')) {
      const m = line.match(/^-[AI] \S+ (?:\d+ )?(.*)$/);
      if (!m) continue;
      t.is(renderRule(parseRule(tokenize(m[1]))), m[1]);
      n++;
    }
  }
  t.true(n > 300, `${n} rules checked`);
});

test('unknown syntax is a clear error naming the rule', (t) => {
  const e = t.throws(() => parseRule(tokenize('-m owner --uid-owner 0 -j ACCEPT')), { instanceOf: RuleSyntaxError });
  t.regex(e!.message, /unsupported match owner in rule: -m owner/);
  t.throws(() => parseRule(tokenize('-d 10.0.0.1/32 -p tcp')), { message: /missing -j target/ });
  t.throws(() => parseRule(tokenize('-d 10.0.0.1 -j ACCEPT')), { message: /lacks a prefix length/ });
  t.throws(() => parseRule(tokenize('-j MARK --or-mark 0x4000')), { message: /not canonical/ });
});

const restore = (k: FakeKernel, text: string) => k.exec('iptables-restore', ['--noflush', '-w'], text);

test('fake kernel: a jump to a missing chain fails the whole table, which stays as it was', async (t) => {
  const k = new FakeKernel();
  await restore(k, '*nat\n:A - [0:0]\n-A A -j RETURN\nCOMMIT\n');
  const before = k.dump(4);
  await t.throwsAsync(restore(k, '*nat\n:A - [0:0]\n-A A -j ACCEPT\n-A A -j NOPE\nCOMMIT\n'), { message: /jump to missing chain NOPE/ });
  t.is(k.dump(4), before);
});

test('fake kernel: a chain still referenced or not empty cannot be deleted', async (t) => {
  const k = new FakeKernel();
  await restore(k, '*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\nCOMMIT\n');
  await t.throwsAsync(restore(k, '*nat\n:B - [0:0]\n-X B\nCOMMIT\n'), { message: /still referenced from A/ });
  await t.throwsAsync(restore(k, '*nat\n-X A\nCOMMIT\n'), { message: /not empty/ });
  await restore(k, '*nat\n:A - [0:0]\n:B - [0:0]\n-X B\n-X A\nCOMMIT\n');
  t.notRegex(k.dump(4), /:A |:B /);
});

test('fake kernel: --noflush keeps other chains, a chain line flushes its chain, -D needs an exact rule', async (t) => {
  const k = new FakeKernel();
  await restore(k, '*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j ACCEPT\n-A B -j DROP\nCOMMIT\n');
  await restore(k, '*filter\n:A - [0:0]\n-A A -j RETURN\nCOMMIT\n');
  t.regex(k.dump(4), /-A A -j RETURN\n-A B -j DROP\n/);
  await t.throwsAsync(restore(k, '*filter\n-D B -j ACCEPT\nCOMMIT\n'), { message: /Bad rule/ });
  await t.throwsAsync(restore(k, '*filter\n-I B 3 -j ACCEPT\nCOMMIT\n'), { message: /too big/ });
  await t.throwsAsync(restore(k, '*filter\n-A B -j ACCEPT\n'), { message: /missing COMMIT/ });
});
