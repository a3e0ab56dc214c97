// The scenario table's environment inside a user-mode-linux guest, for modes
// the host kernel cannot run (IPVS): the same sandbox layout and addresses
// as on the host (helpers/uml-sandbox.ts), real TCP and UDP traffic from the
// guest's client namespace, and the real kproxy in its node namespace.
import type { ProxyMode } from '../../modes/registry.ts';
import { clientScript, udpSessionScript, type ClientResult, type ContinuousClient, type UdpAnswer, type UdpSession } from '../helpers/traffic.ts';
import { guestPath, type GuestProcess, type Uml } from '../helpers/uml.ts';
import { runUmlKproxy, startUmlKproxy, startUmlProber, type UmlProber } from '../helpers/uml-kproxy.ts';
import { connectManyInUml, type UmlSandbox } from '../helpers/uml-sandbox.ts';
import type { E2eEnv, From } from './env.ts';
import { modeLeftovers, type NodeRun } from './kernel-state.ts';

const node = (): string => guestPath(process.execPath);

export interface UmlEnv extends E2eEnv {
  /** Stops what the environment started in the guest (probers, clients). */
  close(): Promise<void>;
}

/** `modes`: every mode this guest runs (the mode-switch case picks another of them). */
export async function umlEnv(uml: Uml, sandbox: UmlSandbox, modes: readonly ProxyMode[]): Promise<UmlEnv> {
  const started: GuestProcess[] = [];
  const probers = new Map<From, UmlProber>();
  const prober = async (from: From): Promise<UmlProber> => {
    let p = probers.get(from);
    if (!p) probers.set(from, (p = await startUmlProber(uml, from === 'client' ? sandbox.client : sandbox.node)));
    return p;
  };
  const nodeProber = await prober('node');
  const run: NodeRun = async (argv) => (await sandbox.exec(sandbox.node, argv)).stdout;
  const spawnIn = async (ns: string, script: string, args: unknown): Promise<GuestProcess> => {
    const p = await uml.spawn(['ip', 'netns', 'exec', ns, node(), '-e', script], { env: { KP_ARGS: JSON.stringify(args) } });
    started.push(p);
    return p;
  };
  return {
    name: 'uml',
    // The guest's one CPU is shared with the host's other work: an attempt gets three times the host's time.
    connect: (from, host, port, opts) => connectManyInUml(uml, from === 'client' ? sandbox.client : sandbox.node, host, port, { ...opts, timeoutMs: 3 * (opts?.timeoutMs ?? 1000) }),
    async continuous(host, port, opts = {}): Promise<ContinuousClient> {
      const p = await spawnIn(sandbox.client, clientScript, {
        host, port, protocol: 'tcp', count: 0, concurrency: 1, timeoutMs: 3 * (opts.timeoutMs ?? 1000), continuous: true, intervalMs: opts.intervalMs ?? 20,
      });
      const first = await p.nextLine(60_000);
      if (first !== 'started') throw new Error(`continuous client said ${first}`);
      return {
        async stop(): Promise<ClientResult> {
          await p.end();
          return JSON.parse(await p.nextLine(30_000)) as ClientResult;
        },
      };
    },
    async httpGet(from, url) {
      return (await prober(from)).get(url);
    },
    async udpSession(host, port): Promise<UdpSession> {
      const p = await spawnIn(sandbox.client, udpSessionScript, { host, port, timeoutMs: 2000 });
      const hello = JSON.parse(await p.nextLine(60_000)) as UdpAnswer;
      return {
        sourcePort: Number(hello.answer),
        async ask() {
          await p.write('ask\n');
          return JSON.parse(await p.nextLine(30_000)) as UdpAnswer;
        },
        close() {
          void p.kill();
        },
      };
    },
    /** `path` is a path in the guest (see kernel-modes-uml.test.ts: on its tmpfs). */
    async writeSource(path, text) {
      const file = guestPath(path);
      await uml.exec(['sh', '-c', 'cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', file], { input: text });
    },
    startKproxy: (mode, sourceFile) => startUmlKproxy(uml, sandbox, nodeProber, { mode, sourceFile }),
    // The guest has no host name of its own: name the node as kproxy runs it.
    runKproxy: (args) => runUmlKproxy(uml, sandbox.node, args.includes('--hostname-override') ? args : [...args, '--hostname-override', 'node-a']),
    async kernelText() {
      return (await sandbox.exec(sandbox.node, ['sh', '-c', 'iptables-legacy-save; ip6tables-legacy-save; ipvsadm -Sn; ipset save; ip -o addr show'])).stdout;
    },
    leftovers: (mode, before) => modeLeftovers(run, 'iptables-legacy-save', mode, before),
    // This kernel has no nf_tables for IPv4: no nftables table can be there.
    snapshot: async (running) => ({ running, nftTables: [] }),
    otherMode(mode) {
      const other = modes.find((m) => m !== mode);
      if (!other) throw new Error(`no other mode runs in the guest than ${mode}`);
      return other;
    },
    async close() {
      for (const p of started) await p.kill();
      for (const p of probers.values()) await p.stop();
    },
  };
}
