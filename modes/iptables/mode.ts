// The iptables mode as the core sees it: one entry of modes/registry.ts.
import type { ModeDescriptor } from '../backend.ts';
import type { FakeDataplane, TraceOutcome } from '../fake.ts';
import { IptablesBackend } from './backend.ts';
import { FakeKernel } from './fake-kernel.ts';

export const iptablesMode: ModeDescriptor = {
  name: 'iptables',
  summary: "kube-proxy's iptables chains, one iptables-restore batch per family per sync",
  configBlock: 'iptables',
  settings: [
    { key: 'watchEvents', flag: 'iptables-watch-events', field: 'watchEvents', kind: 'bool', default: true, help: "watch nf_tables events (iptables-nft only) so that changes others make to kproxy's chains are repaired at once; false leaves it to the periodic check (canaries and jumps) and the hourly full sync, and saves the nft monitor process (430 MB at 10,000 Services)" },
  ],
  tools: (family) => family === 4 ? ['iptables-restore', 'iptables-save', 'ipset'] : ['ip6tables-restore', 'ip6tables-save', 'ipset'],
  kernelModules: [],
  metrics: {
    syncFailures: { name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total', help: 'Cumulative proxy iptables restore failures' },
    owned: { name: 'kubeproxy_sync_proxy_rules_iptables_total', help: 'Total number of iptables rules owned by kube-proxy' },
  },
  create: (opts, log) => new IptablesBackend(opts, log),
  cleanup: (opts, log) => new IptablesBackend(opts, log).cleanup(),
  // iptables-save prints kproxy's chains in a stable order already.
  normalizeListing: (text) => text,
  fake(opts): FakeDataplane {
    const kernel = new FakeKernel(opts.localAddresses);
    return {
      exec: kernel.exec,
      trace: (p) => kernel.trace({
        src: p.src, dst: p.dst, dport: p.dport,
        proto: p.protocol.toLowerCase() as 'tcp' | 'udp' | 'sctp',
        // Pods and outside clients both arrive through PREROUTING.
        from: p.from === 'node' ? 'node' : 'external',
      }).map((o): TraceOutcome => ({
        verdict: o.verdict !== 'reject' ? o.verdict : o.rejectWith === 'tcp-reset' ? 'reset' : 'icmp',
        ...(o.dnat ? { endpoint: o.dnat } : {}),
        masquerade: o.masquerade,
      })),
    };
  },
};
