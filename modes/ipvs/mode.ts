// The IPVS mode as the core sees it: one entry of modes/registry.ts.
import { KproxyError } from '../../lib/errors.ts';
import { ToolError } from '../../lib/exec.ts';
import type { ModeDescriptor } from '../backend.ts';
import { IpvsBackend } from './backend.ts';
import { FakeIpvsDataplane } from './fake.ts';
import { normalizeListing } from './listing.ts';
import { missingSchedulers } from './probe.ts';
import { ipvsSettings, ipvsSettingsOf } from './settings.ts';

export const ipvsMode: ModeDescriptor = {
  name: 'ipvs',
  summary: 'IPVS virtual servers (rr, lc, sh, mh, ... per node or per Service), one ipvsadm -R, ipset restore and ip -batch per sync',
  configBlock: 'ipvs',
  settings: ipvsSettings,
  tools: (family) => ['ipvsadm', 'ipset', 'ip', 'sysctl', family === 4 ? 'iptables-restore' : 'ip6tables-restore', family === 4 ? 'iptables-save' : 'ip6tables-save'],
  kernelModules: ['ip_vs', 'ip_set', 'xt_ipvs', 'xt_set'],
  // Service addresses sit on kube-ipvs0: the kernel answers their unserved ports (kubernetes#72236).
  differences: { serviceAddressesLocal: true },
  async unsupported(exec) {
    try {
      await exec('ipvsadm', ['-Ln', '--timeout']);
      return undefined;
    } catch (e) {
      const lines = (e instanceof ToolError ? e.stderr : (e as Error).message).split('\n').map((l) => l.trim()).filter(Boolean);
      // ipvsadm's own words say it best; modprobe's may come first.
      const why = lines.find((l) => /initialize ipvs/.test(l)) ?? lines[0] ?? 'no answer';
      return `--proxy-mode ipvs needs IP Virtual Server in the kernel, and this one has none (ipvsadm: ${why}); load the ip_vs module or choose another --proxy-mode`;
    }
  },
  async checkStart({ settings, exec, masqueradeBit }) {
    const { scheduler } = ipvsSettingsOf(settings);
    if ((await missingSchedulers(exec, [scheduler], masqueradeBit)).size > 0) {
      throw new KproxyError('KPROXY_KERNEL_MISSING', `--ipvs-scheduler ${scheduler}: the kernel has no such scheduler (module ip_vs_${scheduler} is missing); load it or choose another scheduler`);
    }
  },
  metrics: {
    syncFailures: { name: 'kproxy_sync_proxy_rules_ipvs_sync_failures_total', help: 'Cumulative IPVS sync failures' },
    owned: { name: 'kproxy_sync_proxy_rules_ipvs_objects', help: 'Objects kproxy holds in IPVS mode: virtual servers, real servers, ipset entries, addresses, iptables rules' },
  },
  create: (opts, log) => new IpvsBackend(opts, log),
  cleanup: (opts, log) => new IpvsBackend(opts, log).cleanup(),
  normalizeListing,
  fake(opts) {
    return new FakeIpvsDataplane(opts);
  },
};
