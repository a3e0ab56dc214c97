// The one table of kernel e2e cases. Each runs once per registered mode,
// in the environment whose kernel runs that mode (env.ts: network
// namespaces on the host, kernel-modes.test.ts; or a user-mode-linux guest,
// kernel-modes-uml.test.ts), in its own sandbox with its own kproxy, driven
// through the YAML file source exactly as an operator would drive it.
import type { ExecutionContext } from 'ava';
import { modeOf, type ProxyMode } from '../../modes/registry.ts';
import { addresses } from '../helpers/netns.ts';
import { shares, type ClientResult } from '../helpers/traffic.ts';
import type { EndpointSpec, ServiceSpec } from './cluster.ts';
import type { E2eEnv, KernelSnapshot, RunningKproxy } from './env.ts';

/** Every backend pod serves these ports (see startBackends in the runner). */
export const tcpPort = 8080;
export const udpPort = 5353;

export interface ScenarioContext {
  readonly t: ExecutionContext;
  readonly mode: ProxyMode;
  readonly env: E2eEnv;
  /** Every mode this environment runs (what --cleanup must leave nothing of). */
  readonly modes: readonly ProxyMode[];
  /** The kproxy now running (replaced by restartKproxy). */
  readonly kproxy: RunningKproxy;
  /** Rewrites the source file and waits until kproxy has synced it. */
  applyServices(services: readonly ServiceSpec[]): Promise<void>;
  /** Stops the running kproxy with SIGTERM and checks that it exited cleanly. */
  stopKproxy(): Promise<void>;
  /** Starts kproxy in `mode` (default: the scenario's) after a stop. */
  startKproxy(mode?: ProxyMode): Promise<RunningKproxy>;
  /**
   * As a rolling update does it: SIGTERM to the old kproxy and, after the
   * optional pause, the new one started without waiting for the old one to
   * exit (a mode that forwards itself keeps serving until its successor listens).
   */
  restartKproxy(mode?: ProxyMode, pauseMs?: number): Promise<RunningKproxy>;
}

export interface Scenario {
  readonly title: string;
  /** What the source file holds when kproxy starts. */
  readonly services: readonly ServiceSpec[];
  run(ctx: ScenarioContext): Promise<void>;
}

const pods = [1, 2, 3].map((i) => ({ name: `pod-${i}`, ip: addresses.podIP(i) }));
const eps = (which: readonly number[], nodeName = 'node-a'): EndpointSpec[] =>
  which.map((i) => ({ ip: addresses.podIP(i), nodeName }));
const web = (extra: Partial<ServiceSpec> = {}): ServiceSpec => ({
  name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: tcpPort }], endpoints: eps([1, 2, 3]), ...extra,
});
const dns: ServiceSpec = {
  name: 'dns', clusterIP: '10.96.0.53', ports: [{ name: 'dns', port: 53, targetPort: udpPort, protocol: 'UDP' }], endpoints: eps([1, 2, 3]),
};

/** A rule that would hijack another Service, hidden in a name. */
const injectedRule = '-I PREROUTING 1 -p tcp -d 10.96.0.10 --dport 80 -j DNAT --to-destination 10.123.3.2:8080';

const show = (r: ClientResult): string => JSON.stringify({ ...r, failures: r.failures.slice(0, 10) });

function allAnswered(t: ExecutionContext, r: ClientResult, what: string): void {
  t.is(r.answered, r.attempts, `${what}: every attempt answered: ${show(r)}`);
}

function onlyBackends(t: ExecutionContext, r: ClientResult, allowed: readonly string[], what: string): void {
  const seen = Object.keys(r.byBackend);
  t.deepEqual(seen.filter((b) => !allowed.includes(b)), [], `${what}: answers only from ${allowed.join(', ')}: ${show(r)}`);
}

export const scenarios: readonly Scenario[] = [
  {
    title: 'ClusterIP spreads 300 connections over 3 endpoints, each at least 20%',
    services: [web()],
    async run({ t, env }) {
      const r = await env.connect('client', '10.96.0.10', 80, { count: 300 });
      allAnswered(t, r, 'client → ClusterIP');
      for (const [pod, share] of Object.entries(shares(r, pods.map((p) => p.name)))) {
        t.true(share >= 0.2, `${pod} got ${(share * 100).toFixed(1)}% (< 20%): ${show(r)}`);
      }
      // From the node itself: the nat OUTPUT path.
      const local = await env.connect('node', '10.96.0.10', 80, { count: 30 });
      allAnswered(t, local, 'node → ClusterIP');
      t.true(Object.keys(local.byBackend).length >= 2, `node → ClusterIP reaches several endpoints: ${show(local)}`);
    },
  },
  {
    title: 'NodePort answers from the client namespace',
    services: [web({ type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: tcpPort, nodePort: 30080 }] })],
    async run({ t, env }) {
      const r = await env.connect('client', addresses.nodeIP, 30080, { count: 60 });
      allAnswered(t, r, 'client → NodePort');
      t.true(Object.keys(r.byBackend).length >= 2, `NodePort reaches several endpoints: ${show(r)}`);
    },
  },
  {
    title: 'externalIP answers from the client namespace',
    services: [web({ externalIPs: ['203.0.113.10'] })],
    async run({ t, env }) {
      const r = await env.connect('client', '203.0.113.10', 80, { count: 60 });
      allAnswered(t, r, 'client → externalIP');
      t.true(Object.keys(r.byBackend).length >= 2, `externalIP reaches several endpoints: ${show(r)}`);
    },
  },
  {
    title: 'ClientIP affinity sends every connection of a client to one endpoint',
    services: [web({ affinitySeconds: 600 })],
    async run({ t, env }) {
      const r = await env.connect('client', '10.96.0.10', 80, { count: 30, concurrency: 1 });
      allAnswered(t, r, 'client → ClusterIP with affinity');
      t.is(Object.keys(r.byBackend).length, 1, `one endpoint for one client: ${show(r)}`);
    },
  },
  {
    title: 'externalTrafficPolicy Local uses only local endpoints; healthCheckNodePort says 200/503',
    services: [
      web({
        name: 'local-web', clusterIP: '10.96.0.11', type: 'NodePort', externalTrafficPolicy: 'Local', healthCheckNodePort: 30300,
        ports: [{ name: 'http', port: 80, targetPort: tcpPort, nodePort: 30081 }],
        endpoints: [...eps([1]), ...eps([2, 3], 'node-b')],
      }),
      web({
        name: 'remote-web', clusterIP: '10.96.0.12', type: 'NodePort', externalTrafficPolicy: 'Local', healthCheckNodePort: 30301,
        ports: [{ name: 'http', port: 80, targetPort: tcpPort, nodePort: 30082 }],
        endpoints: eps([2, 3], 'node-b'),
      }),
    ],
    async run({ t, env }) {
      const ext = await env.connect('client', addresses.nodeIP, 30081, { count: 60 });
      allAnswered(t, ext, 'client → Local NodePort');
      onlyBackends(t, ext, ['pod-1'], 'Local NodePort');
      // The ClusterIP keeps the Cluster policy: every endpoint.
      const internal = await env.connect('client', '10.96.0.11', 80, { count: 60 });
      allAnswered(t, internal, 'client → ClusterIP of a Local Service');
      t.true(Object.keys(internal.byBackend).length >= 2, `ClusterIP of a Local Service uses remote endpoints too: ${show(internal)}`);

      const healthy = await env.httpGet('client', `http://${addresses.nodeIP}:30300/`);
      t.is(healthy.status, 200, `healthCheckNodePort with a local endpoint: ${JSON.stringify(healthy)}`);
      t.is(JSON.parse(healthy.body || '{}').localEndpoints, 1, `localEndpoints 1: ${healthy.body}`);
      const unhealthy = await env.httpGet('client', `http://${addresses.nodeIP}:30301/`);
      t.is(unhealthy.status, 503, `healthCheckNodePort without a local endpoint: ${JSON.stringify(unhealthy)}`);
      t.is(JSON.parse(unhealthy.body || '{}').localEndpoints, 0, `localEndpoints 0: ${unhealthy.body}`);
      // Endpoints exist elsewhere, so external traffic here is dropped, not refused.
      const dropped = await env.connect('client', addresses.nodeIP, 30082, { count: 3, timeoutMs: 500 });
      t.is(dropped.answered, 0, `no local endpoint: nothing answers: ${show(dropped)}`);
      t.is(dropped.refused, 0, `no local endpoint: dropped, not refused: ${show(dropped)}`);
    },
  },
  {
    title: 'a Service without endpoints is refused at once',
    services: [web(), web({ name: 'empty', clusterIP: '10.96.0.20', endpoints: [] })],
    async run({ t, mode, env }) {
      const r = await env.connect('client', '10.96.0.20', 80, { count: 20, timeoutMs: 3000 });
      if (modeOf(mode).differences?.resetAfterAccept) {
        // This mode accepts, then resets: the client's connect succeeds and its first read fails.
        t.is(r.errors.ECONNRESET, 20, `every connection reset right after it was accepted: ${show(r)}`);
      } else {
        t.is(r.refused, 20, `every connection refused: ${show(r)}`);
      }
      t.true(r.maxAttemptMs < 1000, `refused at once (slowest ${r.maxAttemptMs} ms): ${show(r)}`);
    },
  },
  {
    title: 'removing an endpoint from the file moves traffic within one sync',
    services: [web()],
    async run({ t, env, applyServices }) {
      const before = await env.connect('client', '10.96.0.10', 80, { count: 60 });
      t.true((before.byBackend['pod-3'] ?? 0) > 0, `pod-3 serves before: ${show(before)}`);
      await applyServices([web({ endpoints: eps([1, 2]) })]);
      const after = await env.connect('client', '10.96.0.10', 80, { count: 100 });
      allAnswered(t, after, 'after removing pod-3');
      onlyBackends(t, after, ['pod-1', 'pod-2'], 'after removing pod-3');
    },
  },
  {
    title: 'a UDP client moves off a removed endpoint (conntrack cleanup)',
    services: [web(), dns],
    async run({ t, env, applyServices }) {
      const session = await env.udpSession('10.96.0.53', 53);
      try {
        const first = await session.ask();
        t.is(first.kind, 'ok', `UDP answer: ${JSON.stringify(first)}`);
        const again = await session.ask();
        t.is(again.answer, first.answer, 'one UDP flow sticks to one endpoint');
        const gone = Number(first.answer.replace('pod-', ''));
        await applyServices([web(), { ...dns, endpoints: eps([1, 2, 3].filter((i) => i !== gone)) }]);
        // The removed pod still runs in the sandbox: only deleting the
        // conntrack entry moves this flow.
        const moved = await session.ask();
        t.is(moved.kind, 'ok', `UDP answer after the change: ${JSON.stringify(moved)}`);
        t.not(moved.answer, first.answer, `flow left the removed endpoint ${first.answer} (source port ${session.sourcePort})`);
      } finally {
        session.close();
      }
    },
  },
  {
    title: 'a client connecting through a SIGTERM and restart of kproxy sees no failed connection',
    services: [web()],
    async run({ t, env, restartKproxy }) {
      const client = await env.continuous('10.96.0.10', 80, { intervalMs: 10, timeoutMs: 2000 });
      await new Promise((r) => setTimeout(r, 300));
      await restartKproxy(undefined, 300);
      await new Promise((r) => setTimeout(r, 500));
      const r = await client.stop();
      t.true(r.attempts >= 20, `client kept connecting (${r.attempts} attempts)`);
      t.is(r.answered, r.attempts, `no failed connection across the restart: ${show(r)}`);
    },
  },
  {
    title: 'a malformed Service in the file is skipped while the others keep working',
    services: [
      web(),
      web({ name: 'bad-port', clusterIP: '10.96.0.30', rawSpec: { ports: [{ name: 'http', port: 'eighty', protocol: 'TCP', targetPort: tcpPort }] } }),
      web({ name: 'bad-ip', clusterIP: '10.96.0.300' }),
    ],
    async run({ t, env, kproxy, applyServices }) {
      const r = await env.connect('client', '10.96.0.10', 80, { count: 60 });
      allAnswered(t, r, 'the valid Service next to broken ones');
      t.true(/bad-port/.test(kproxy.logs()) && /bad-ip/.test(kproxy.logs()), `the log names each skipped Service:\n${kproxy.logs().slice(-3000)}`);
      // Later changes still apply.
      await applyServices([web({ endpoints: eps([1]) }), web({ name: 'bad-ip', clusterIP: '10.96.0.300' })]);
      const after = await env.connect('client', '10.96.0.10', 80, { count: 30 });
      allAnswered(t, after, 'after a later change');
      onlyBackends(t, after, ['pod-1'], 'after a later change');
    },
  },
  {
    title: 'names carrying rule syntax never reach the kernel; every other Service keeps working',
    services: [
      web(),
      web({ name: 'evil-port', clusterIP: '10.96.0.31', ports: [{ name: `x"\n${injectedRule}\n#`, port: 80, targetPort: tcpPort }] }),
      web({ name: 'evil\n-A INPUT -j DROP', clusterIP: '10.96.0.32' }),
      web({ name: 'evil-ns', namespace: 'shop front{;}', clusterIP: '10.96.0.33' }),
      web({ name: 'dépôt', clusterIP: '10.96.0.34' }),
      web({ name: 'e'.repeat(300), clusterIP: '10.96.0.35' }),
      web({ name: 'quote"s@#;$', clusterIP: '10.96.0.36' }),
    ],
    async run({ t, env, kproxy }) {
      const r = await env.connect('client', '10.96.0.10', 80, { count: 60 });
      allAnswered(t, r, 'the valid Service next to hostile ones');
      const kernel = await env.kernelText();
      t.false(kernel.includes('10.123.3.2'), 'no injected DNAT rule');
      t.false(/-A INPUT -j DROP/.test(kernel), 'no injected DROP rule');
      t.false(/10\.96\.0\.3[1-6]/.test(kernel), 'nothing of the hostile Services');
      const skipped = kproxy.logs().split('\n').filter((l) => l.includes('invalid Service skipped')).length;
      t.true(skipped >= 6, `each hostile Service is logged as skipped (${skipped}):\n${kproxy.logs().slice(-3000)}`);
    },
  },
  {
    title: 'switching the node to the other mode removes this mode\'s rules, and back',
    services: [web()],
    async run({ t, mode, env, restartKproxy }) {
      const other = env.otherMode(mode);
      const check = async (what: string) => {
        const r = await env.connect('client', '10.96.0.10', 80, { count: 30 });
        allAnswered(t, r, what);
      };
      await check(`${mode} first`);
      // A client connecting all along: the old mode's rules go only after the
      // new mode's first sync, so no connection fails across either switch.
      const client = await env.continuous('10.96.0.10', 80, { intervalMs: 10, timeoutMs: 2000 });
      const before = await env.snapshot(mode);
      await restartKproxy(other);
      await check(`${other} after ${mode}`);
      await assertModeGoneSoon(t, env, mode, before);
      const beforeOther = await env.snapshot(other);
      await restartKproxy(mode);
      await check(`${mode} again`);
      await assertModeGoneSoon(t, env, other, beforeOther);
      const r = await client.stop();
      t.is(r.answered, r.attempts, `no failed connection across both switches: ${show(r)}`);
    },
  },
  {
    title: '--cleanup removes every rule of every mode',
    services: [web()],
    async run({ t, mode, modes, env, stopKproxy }) {
      const before = await env.snapshot(mode);
      await stopKproxy();
      if (modeOf(mode).differences?.needsProcess) {
        // The mode forwards in its own process: SIGTERM leaves the Service
        // address in place, where nothing listens now, so a client is refused at once.
        const r = await env.connect('client', '10.96.0.10', 80, { count: 5, timeoutMs: 3000 });
        t.is(r.refused, 5, `after SIGTERM, before --cleanup, this mode's traffic needs kproxy: refused at once: ${show(r)}`);
      } else {
        // SIGTERM leaves the rules in place: traffic still flows without kproxy.
        const r = await env.connect('client', '10.96.0.10', 80, { count: 30 });
        allAnswered(t, r, 'after SIGTERM, before --cleanup');
      }
      const cleanup = await env.runKproxy(['--cleanup']);
      t.is(cleanup.code, 0, `kproxy --cleanup: ${cleanup.stderr}`);
      for (const m of modes) await assertModeGone(t, env, m, before);
    },
  },
];

/** Nothing of `gone` is left in the node (its tables, chains, virtual servers, sets). */
async function assertModeGone(t: ExecutionContext, env: E2eEnv, gone: ProxyMode, whileRunning: KernelSnapshot): Promise<void> {
  const problem = await env.leftovers(gone, whileRunning);
  t.is(problem, '', problem);
}

/**
 * The other mode's rules are removed just after the new mode's first sync,
 * in the background: wait up to 20 s for them to go, then assert.
 */
async function assertModeGoneSoon(t: ExecutionContext, env: E2eEnv, gone: ProxyMode, whileRunning: KernelSnapshot): Promise<void> {
  const end = Date.now() + 20_000;
  while (Date.now() < end && await env.leftovers(gone, whileRunning) !== '') {
    await new Promise((r) => setTimeout(r, 300));
  }
  await assertModeGone(t, env, gone, whileRunning);
}
