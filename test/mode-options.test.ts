// Which IP families kproxy programs, from the node, the cluster CIDRs and
// the Services of the initial list.
import test from 'ava';
import { ipFamilies } from '../proxy/mode-options.ts';
import { Tracker } from '../proxy/tracker.ts';
import { recordingLogger } from './fixtures/proxy/objects.ts';

const base = { clusterCIDRs: [], nodeIPs: ['192.168.0.2'], mode: 'nftables' as const, checkTools: false };

const cases: [string, Parameters<typeof ipFamilies>[0], number[]][] = [
  ['IPv4 only node and Services', base, [4]],
  ['an IPv6 cluster CIDR', { ...base, clusterCIDRs: ['10.244.0.0/16', 'fd00:10::/64'] }, [4, 6]],
  ['an IPv6 node address', { ...base, nodeIPs: ['192.168.0.2', 'fd00::2'] }, [4, 6]],
  ['a Service with an IPv6 clusterIP', { ...base, serviceIPs: ['172.30.0.1', 'fd00:30::1'] }, [4, 6]],
  ['IPv4 Services only', { ...base, serviceIPs: ['172.30.0.1'] }, [4]],
];
for (const [name, input, want] of cases) {
  test(`families: ${name}`, (t) => t.deepEqual(ipFamilies(input), want));
}

test('a Service address of a family not programmed is warned about once', (t) => {
  const { log, records } = recordingLogger();
  const tracker = new Tracker({ nodeName: 'node-a', families: [4] }, log);
  const svc = {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'dual', namespace: 'default' },
    spec: { clusterIP: '172.30.0.9', clusterIPs: ['172.30.0.9', 'fd00:30::9'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
  };
  tracker.apply({ kind: 'Service', type: 'upsert', object: svc });
  tracker.apply({ kind: 'Synced' });
  const first = tracker.snapshot();
  tracker.apply({ kind: 'Service', type: 'upsert', object: { ...svc, metadata: { ...svc.metadata, labels: { a: 'b' } } } });
  tracker.snapshot();
  const warned = records.filter((r) => String(r.msg).startsWith('Service address of an IP family'));
  t.is(warned.length, 1);
  t.deepEqual(warned[0].addresses, ['fd00:30::9']);
  t.deepEqual([...first.state.services.values()].map((s) => s.clusterIP), ['172.30.0.9']);
});
