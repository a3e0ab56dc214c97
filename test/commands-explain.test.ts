// explain over the fixture cluster: each reason an endpoint is used or left
// out, Service lookup by name, and the rules of that one port in both modes.
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { explainCommand, parseDestination } from '../proxy/commands/explain.ts';
import { loadConfig } from '../proxy/config.ts';
import { silentLogger } from '../lib/log.ts';

const fixture = fileURLToPath(new URL('./fixtures/proxy/cluster.yaml', import.meta.url));

async function explain(target: string, mode = 'iptables'): Promise<string> {
  const config = loadConfig(['explain', '--proxy-mode', mode, '--source-file', fixture, '--hostname-override', 'node-a', target]);
  let text = '';
  const code = await explainCommand(config, silentLogger(), async (s) => { text += s; });
  if (code !== 0) throw new Error(`exit ${code}`);
  return text;
}

test('destinations parse; bad ones say why', (t) => {
  t.deepEqual(parseDestination('10.0.0.1:53/udp'), { ip: '10.0.0.1', port: 53, protocol: 'UDP' });
  t.deepEqual(parseDestination('[fd00::1]:80'), { ip: 'fd00::1', port: 80, protocol: undefined });
  t.is(parseDestination('default/web'), undefined);
  t.is(parseDestination('10.0.0.1:80/icmp'), 'protocol "icmp" is not TCP, UDP or SCTP');
  t.is(parseDestination('10.0.0.300:80'), '"10.0.0.300" is not an IP address');
});

test('topology-filtered endpoints are named as such', async (t) => {
  const out = await explain('default/zonal');
  t.regex(out, /topology same zone \(zone-a\)/);
  t.regex(out, /10\.180\.1\.14:80 +node-b +topology-filtered/);
  t.regex(out, /cluster-policy endpoints \(2\):\n +10\.180\.0\.14:80 +node-a \(this node\) +ready\n +10\.180\.2\.14:80 +node-c +ready/);
});

test('terminating fallback, and a terminating endpoint that is not serving', async (t) => {
  const out = await explain('172.30.0.50:5000/UDP');
  t.regex(out, /10\.180\.1\.16:5000 +node-b +terminating, used as fallback: no endpoint is ready/);
  t.regex(out, /10\.180\.2\.16:5000 +node-c +terminating and not serving/);
});

test('internalTrafficPolicy Local with no local endpoint', async (t) => {
  const out = await explain('itp-local');
  t.regex(out, /local-policy endpoints \(0\): none — traffic policy Local with no local endpoints: traffic from this node is dropped/);
  t.regex(out, /10\.180\.1\.13:80 +node-b +on another node, and traffic policy Local uses only this node's endpoints/);
  t.regex(out, /=> traffic from this node is dropped/);
  t.regex(out, /-j DROP/, 'the DROP rule is shown');
});

test('externalTrafficPolicy Local via the NodePort on the node address', async (t) => {
  const out = await explain('192.168.0.2:30080');
  t.regex(out, /^default\/np-local:http TCP IPv4 \(NodePort\) — matched as nodePort on this node$/m);
  t.regex(out, /local-policy endpoints \(1\):\n +10\.180\.0\.7:8080 +node-a \(this node\) +ready/);
});

test('no EndpointSlice: connections are rejected', async (t) => {
  const out = await explain('default/empty', 'nftables');
  t.regex(out, /cluster-policy endpoints \(0\): none — no EndpointSlice for this Service/);
  t.regex(out, /=> no usable endpoints anywhere: connections are rejected at once \(TCP reset\); no EndpointSlice for this Service/);
  t.regex(out, /nftables rules of this port \([1-9]\d* lines\):/);
  t.regex(out, /172\.30\.0\.51/);
});

test('a dual-stack Service explains both families', async (t) => {
  const out = await explain('dual');
  t.regex(out, /^default\/dual:http TCP IPv4/m);
  t.regex(out, /^default\/dual:http TCP IPv6/m);
  t.regex(out, /\[fd00:10:180::17\]:80 +node-a \(this node\) +ready/);
});

test('unknown and ambiguous names fail with KPROXY_NOT_FOUND', async (t) => {
  const err = await t.throwsAsync(explain('default/nope'));
  t.is((err as { code?: string }).code, 'KPROXY_NOT_FOUND');
});

test('rule lines of a dual-stack Service stay within the explained family', async (t) => {
  const v6 = await explain('[fd00:30::52]:80');
  const rules6 = v6.slice(v6.indexOf('rules of this port'));
  t.regex(rules6, /fd00:30::52/);
  t.false(/172\.30\.0\.52|10\.180\.0\.17/.test(rules6), rules6);
  const v4 = await explain('172.30.0.52:80');
  const rules4 = v4.slice(v4.indexOf('rules of this port'));
  t.regex(rules4, /172\.30\.0\.52/);
  t.false(/fd00:/.test(rules4), rules4);
});

/** The rule lines explain prints, without their indent. */
function ruleSection(out: string): string[] {
  const at = out.indexOf('rules of this port');
  if (at < 0) throw new Error(`no rules section in:\n${out}`);
  return out.slice(at).split('\n').slice(1).filter((l) => l.startsWith('    ')).map((l) => l.trim());
}

for (const mode of ['iptables', 'nftables']) {
  test(`${mode}: a NodePort Service shows its NodePort rules and nothing of another Service`, async (t) => {
    const out = await explain('192.168.0.2:30080', mode);
    const rules = ruleSection(out);
    t.regex(out, new RegExp(`${mode} rules of this port \\(${rules.length} lines\\):`));
    if (mode === 'nftables') {
      t.true(rules.some((l) => /^add element ip kproxy service-nodeports \{ tcp \. 30080 : goto ext-\S+-default\/np-local\/tcp\/http \}$/.test(l)), rules.join('\n'));
    } else {
      t.true(rules.some((l) => /^-A KUBE-NODEPORTS -p tcp -m comment --comment "default\/np-local:http" -m tcp --dport 30080 -j KUBE-EXT-/.test(l)), rules.join('\n'));
    }
    // Every Service name or fixture VIP a line carries is np-local's own.
    for (const l of rules) {
      for (const name of l.match(/default\/[a-z-]+/g) ?? []) t.is(name, 'default/np-local', l);
      for (const ip of l.match(/172\.30\.0\.\d+/g) ?? []) t.is(ip, '172.30.0.42', l);
    }
    // np-local's endpoints, and no one else's.
    t.deepEqual([...new Set(rules.flatMap((l) => l.match(/10\.180\.\d+\.\d+/g) ?? []))].sort(), ['10.180.0.7', '10.180.1.7']);
  });
}
