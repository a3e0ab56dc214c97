// Which IP families kproxy programs, from the node, the cluster CIDRs and
// the Services of the initial list.
import test from 'ava';
import { ipFamilies } from '../proxy/mode-options.ts';

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
