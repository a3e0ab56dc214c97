// Runs every case of scenarios.ts, with real TCP and UDP traffic, against
// each registered mode the host kernel cannot run (placement.ts: IPVS on
// these machines), inside one user-mode-linux guest booted for this file:
// each case in a sandbox of namespaces of its own inside the guest, one
// case at a time (the guest has one CPU).
import test from 'ava';
import { ToolError } from '../../lib/exec.ts';
import { modes as registered, type ProxyMode } from '../../modes/registry.ts';
import { requireKernelPrerequisites } from '../helpers/netns.ts';
import { bootUml, type Uml } from '../helpers/uml.ts';
import { addresses, createUmlSandbox, startUmlBackends } from '../helpers/uml-sandbox.ts';
import { clusterYaml } from './cluster.ts';
import { placement } from './placement.ts';
import { runScenario } from './run-scenario.ts';
import { scenarios, tcpPort, udpPort } from './scenarios.ts';
import { umlEnv } from './uml-env.ts';

const nodeSpec = { name: 'node-a', ip: addresses.nodeIP };
requireKernelPrerequisites();
const { host, uml: elsewhere } = await placement();
const here = elsewhere.map((m) => m.mode);

let uml: Uml;
let cases = 0;
/** Modes the guest's kernel runs: the ones the host cannot, and the others for the mode-switch case. */
let guestModes: ProxyMode[] = [];

test.before(async (t) => {
  uml = await bootUml();
  t.log(`boot ${uml.bootMs} ms, modules ${uml.modulesMs} ms`);
  // Which registered modes this kernel runs, asked of the kproxy command itself.
  for (const m of registered) {
    const sb = await createUmlSandbox(uml, { pods: 0 });
    try {
      const why = await m.unsupported?.(async (tool, args, input) => {
        const r = await sb.run(sb.node, [tool, ...args], { input });
        if (r.code !== 0) throw new ToolError(tool, args, r.code, r.stderr);
        return { stdout: r.stdout, stderr: r.stderr };
      });
      if (!why) guestModes.push(m.name);
    } finally {
      await sb.destroy();
    }
  }
  // The ones the host runs come after, so a switch goes from a guest-only mode to another.
  guestModes = [...here.filter((m) => guestModes.includes(m)), ...guestModes.filter((m) => !here.includes(m))];
});
test.after.always(async () => {
  await uml?.halt();
});

test.serial('every registered mode runs its kernel cases on the host or here', (t) => {
  t.deepEqual([...host, ...here].sort(), registered.map((m) => m.name).sort());
  for (const m of here) t.true(guestModes.includes(m), `the test kernel cannot run ${m} either`);
  t.log(`host: ${host.join(', ')}; user-mode-linux: ${here.join(', ') || 'none'}`);
});

for (const mode of here) {
  for (const scenario of scenarios) {
    test.serial(`${mode} (user-mode-linux): ${scenario.title}`, async (t) => {
      const sandbox = await createUmlSandbox(uml, { pods: 3 });
      t.teardown(() => sandbox.destroy());
      // On the guest's own tmpfs: a process in a network namespace gets no
      // inotify event for a file on hostfs, so kproxy would miss changes there.
      const dir = `/run/kproxy-e2e-${++cases}`;
      await uml.exec(['mkdir', '-p', dir]);
      t.teardown(async () => { await uml.run(['rm', '-rf', dir]); });
      const sourceFile = `${dir}/cluster.yaml`;
      const backends = await startUmlBackends(uml, sandbox.pods, { tcp: [tcpPort], udp: [udpPort] });
      t.teardown(() => backends.stop());
      const env = await umlEnv(uml, sandbox, guestModes);
      t.teardown(() => env.close());
      await env.writeSource(sourceFile, clusterYaml(nodeSpec, scenario.services));
      await runScenario(t, { env, modes: guestModes, mode, scenario, sourceFile, nodeSpec });
    });
  }
}
