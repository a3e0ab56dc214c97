// The scenario table's environment on the host: a sandbox of network
// namespaces (helpers/netns.ts) with three backend pods, a client and a
// node namespace where kproxy runs.
import type { ProxyMode } from '../../modes/registry.ts';
import { runKproxy, startKproxy } from '../helpers/kproxy-process.ts';
import type { Sandbox } from '../helpers/netns.ts';
import { connectMany, httpGet, openUdpSession, startContinuousClient } from '../helpers/traffic.ts';
import { writeAtomically } from './cluster.ts';
import type { E2eEnv } from './env.ts';
import { modeLeftovers, nftTables, type NodeRun } from './kernel-state.ts';

export function hostEnv(sandbox: Sandbox, modes: readonly ProxyMode[]): E2eEnv {
  const ns = (from: 'client' | 'node'): string => (from === 'client' ? sandbox.client : sandbox.node);
  const run: NodeRun = async (argv) => (await sandbox.exec(sandbox.node, argv[0], argv.slice(1))).stdout;
  return {
    name: 'host',
    connect: (from, host, port, opts) => connectMany(ns(from), host, port, opts),
    continuous: (host, port, opts) => startContinuousClient(sandbox.client, host, port, opts),
    httpGet: (from, url) => httpGet(ns(from), url),
    udpSession: (host, port) => openUdpSession(sandbox.client, host, port),
    writeSource: (path, text) => writeAtomically(path, text),
    startKproxy: (mode, sourceFile) => startKproxy({ sandbox, mode, sourceFile }),
    runKproxy: (args) => runKproxy(sandbox, args),
    async kernelText() {
      return [await run(['iptables-save']), await run(['nft', 'list', 'ruleset']), await run(['ip', '-o', 'address', 'show'])].join('\n');
    },
    leftovers: (mode, before) => modeLeftovers(run, 'iptables-save', mode, before),
    snapshot: async (running) => ({ running, nftTables: await nftTables(run) }),
    otherMode(mode) {
      const other = modes.find((m) => m !== mode);
      if (!other) throw new Error(`no other mode runs on the host than ${mode}`);
      return other;
    },
  };
}
