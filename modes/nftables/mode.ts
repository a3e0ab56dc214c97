// The nftables mode as the core sees it: one entry of modes/registry.ts.
import type { ModeDescriptor } from '../backend.ts';
import type { FakeDataplane, TraceOutcome } from '../fake.ts';
import { NftablesBackend } from './backend.ts';
import { FakeNftKernel } from './fake-kernel.ts';
import { normalizeListing } from './listing.ts';
import { trace } from './tracer.ts';

export const nftablesMode: ModeDescriptor = {
  name: 'nftables',
  summary: 'one nftables table per family, map lookups per packet, one nft -f transaction per sync',
  configBlock: 'nftables',
  settings: [
    { key: 'watchEvents', flag: 'nftables-watch-events', field: 'watchEvents', kind: 'bool', default: true, help: "watch nf_tables events so that changes others make to kproxy's table are repaired at once; false leaves it to the periodic check (chains) and the hourly full sync, and saves the nft monitor process (200 MB at 10,000 Services)" },
  ],
  tools: () => ['nft'],
  kernelModules: [],
  metrics: {
    syncFailures: { name: 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total', help: 'Cumulative proxy nftables sync failures' },
  },
  create: (opts, log) => new NftablesBackend(opts, log),
  cleanup: (opts, log) => new NftablesBackend(opts, log).cleanup(),
  // nft prints set elements in the kernel's hash order.
  normalizeListing,
  fake(opts): FakeDataplane {
    const kernel = new FakeNftKernel();
    return {
      exec: kernel.exec,
      trace: (p) => trace(kernel, {
        family: p.family, saddr: p.src, daddr: p.dst, protocol: p.protocol, dport: p.dport,
        from: p.from === 'node' ? 'node' : 'outside',
      }, { localAddresses: opts.localAddresses }).map((o): TraceOutcome => ({
        verdict: o.verdict !== 'reject' ? o.verdict : o.rejectWith === 'tcp-reset' ? 'reset' : 'icmp',
        ...(o.dnat ? { endpoint: o.dnat } : {}),
        masquerade: o.masquerade,
      })),
    };
  },
};
