// The userspace backend on its fake dataplane: NodeState to listeners and
// Service addresses, addresses added before the listeners that need them
// and removed after those that used them, partial syncs that move only
// what changed, the record committed only when the forwarder took the
// plan, two ports wanting one listener, schedulers, drift, settings.
import test from 'ava';
import type { Exec } from '../lib/exec.ts';
import { recordingLogger } from './fixtures/proxy/objects.ts';
import { silentLogger } from '../lib/log.ts';
import type { ModeOptions } from '../modes/backend.ts';
import { wrapExec } from '../modes/fake.ts';
import { modeOf } from '../modes/registry.ts';
import { syncBackend } from '../modes/sync.ts';
import { fullChanges, noChanges, type Changes, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { modeSettings } from '../proxy/mode-settings.ts';
import { UserspaceBackend } from '../modes/userspace/backend.ts';
import { registerFakeHost } from '../modes/userspace/host.ts';
import { TableForwarder } from '../modes/userspace/table-forwarder.ts';
import type { ListenerSpec } from '../modes/userspace/table.ts';
import { ep, nodeState, svc, withPort } from './helpers/state.ts';

const nodeIP = '192.168.0.2';
const opts: ModeOptions = { families: [4, 6], clusterCIDRs: ['10.244.0.0/16'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14 };
const mode = modeOf('userspace');

const web = svc({ name: 'shop/web:http', clusterIP: '10.96.0.10', port: 80, nodePort: 30080, clusterEndpoints: [ep('10.244.1.11', 8080), ep('10.244.2.12', 8080)] });
const dns = svc({ name: 'kube-system/dns:dns', clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', clusterEndpoints: [ep('10.244.2.91', 53)] });

const changed = (...ports: ServicePortState[]): Changes => ({ full: false, services: new Set(ports.map((p) => p.key)), staleUdpEndpoints: [], staleUdpServiceIPs: [] });

/** A fake dataplane whose forwarder records every call (and can be told to fail the next one), with every tool call in one log. */
function lab(local: readonly string[] = [nodeIP, '127.0.0.1']) {
  const fake = mode.fake({ localAddresses: local });
  const calls: string[] = [];
  const exec: Exec = wrapExec(fake.exec, async (inner, tool, args, input) => {
    if (args[0] === '-batch') calls.push(`ip ${(input ?? '').trim().split('\n').join('; ')}`);
    return inner(tool, args, input);
  });
  let failNext = false;
  const table = new TableForwarder();
  const forwarder = new Proxy(table, {
    get(target, prop) {
      if (prop === 'apply' || prop === 'update') {
        return async (arg: { listeners?: ListenerSpec[]; upsert?: ListenerSpec[]; remove?: string[] }) => {
          if (failNext) {
            failNext = false;
            throw new Error('the forwarder said no');
          }
          calls.push(prop === 'apply' ? `apply ${arg.listeners!.length}` : `update +${arg.upsert!.map((l) => `${l.protocol}/${l.ip}:${l.port}`).join(',')} -${arg.remove!.join(',')}`);
          return (target[prop] as (a: unknown) => Promise<unknown>).call(target, arg);
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  // The fake's own listing (node addresses, owned ones) with a forwarder that records.
  registerFakeHost(fake.exec, {
    exec: fake.exec, live: false, startForwarder: async () => forwarder,
    listing: async () => ({ addresses: (await fake.exec('ip', ['-o', 'address', 'show'])).stdout, links: (await fake.exec('ip', ['-o', 'link', 'show'])).stdout }),
  });
  const backend = (extra: Partial<ModeOptions> = {}, log = silentLogger()) => new UserspaceBackend({ ...opts, ...extra, exec }, log);
  return { fake, calls, table, backend, failNextApply: () => { failNext = true; } };
}

const lines = (table: TableForwarder): string[] => table.table.listeners.map((l) => `${l.protocol}/${l.ip}:${l.port} ${l.remote.endpoints.map((e) => `${e.ip}:${e.port}`).join(' ') || l.remote.whenEmpty}`).sort();

test('a full sync gives the forwarder every listener, NodePorts on each node address; partial syncs move only what changed, addresses before and after', async (t) => {
  const { calls, table, backend } = lab();
  const b = backend();
  const s1 = nodeState([web]);
  t.true((await syncBackend(b, s1, fullChanges(s1))).ok);
  t.deepEqual(calls, ['ip address replace 10.96.0.10/32 dev kproxy0 metric 7717', 'apply 3']);
  t.deepEqual(lines(table), [
    'TCP/10.96.0.10:80 10.244.1.11:8080 10.244.2.12:8080',
    'TCP/127.0.0.1:30080 10.244.1.11:8080 10.244.2.12:8080',
    'TCP/192.168.0.2:30080 10.244.1.11:8080 10.244.2.12:8080',
  ]);
  t.deepEqual(b.owned(), { 'tcp listeners': 3, 'udp listeners': 0, 'ipv4 addresses': 1, 'ipv6 addresses': 0 });

  calls.length = 0;
  const s2 = nodeState([web, dns]);
  const r2 = await syncBackend(b, s2, changed(dns));
  t.true(r2.ok);
  t.false(r2.full);
  // The new Service's address goes on before its listener opens.
  t.deepEqual(calls, ['ip address replace 10.96.0.53/32 dev kproxy0 metric 7717', 'update +UDP/10.96.0.53:53 -']);

  calls.length = 0;
  const web2 = withPort(web, { clusterEndpoints: [ep('10.244.2.12', 8080)] });
  const s3 = nodeState([web2, dns]);
  t.true((await syncBackend(b, s3, changed(web2))).ok);
  t.deepEqual(calls, ['update +TCP/10.96.0.10:80,TCP/127.0.0.1:30080,TCP/192.168.0.2:30080 -'], 'no address moves for an endpoint change');

  calls.length = 0;
  const s4 = nodeState([web2]);
  t.true((await syncBackend(b, s4, changed(dns))).ok);
  // The removed Service's listener closes before its address goes.
  t.deepEqual(calls, ['update + -UDP/10.96.0.53:53', 'ip address del 10.96.0.53/32 dev kproxy0']);
  t.deepEqual(b.owned(), { 'tcp listeners': 3, 'udp listeners': 0, 'ipv4 addresses': 1, 'ipv6 addresses': 0 });
});

test('the record is committed only when the forwarder took the plan: after a refusal the next sync is full', async (t) => {
  const { table, backend, failNextApply } = lab();
  const b = backend();
  const s1 = nodeState([web]);
  t.true((await syncBackend(b, s1, fullChanges(s1))).ok);
  failNextApply();
  const s2 = nodeState([web, dns]);
  const failed = await syncBackend(b, s2, changed(dns));
  t.false(failed.ok);
  t.deepEqual(b.owned(), {}, 'the record is forgotten');
  const again = await syncBackend(b, s2, noChanges);
  t.true(again.ok);
  t.true(again.full, 'unknown record: the next plan is full');
  t.is(table.table.listeners.length, 4);
});

test('two Service ports on one address:port: the one that had it keeps it, the other takes it once it is free', async (t) => {
  const { table, backend } = lab();
  const { log, records } = recordingLogger();
  const b = backend({}, log);
  // An externalIP equal to another Service's cluster IP and port.
  const other = svc({ name: 'shop/other:http', clusterIP: '10.96.0.11', port: 80, externalIPs: ['10.96.0.10'], clusterEndpoints: [ep('10.244.3.13', 8080)] });
  const s1 = nodeState([web]);
  t.true((await syncBackend(b, s1, fullChanges(s1))).ok);
  const s2 = nodeState([web, other]);
  t.true((await syncBackend(b, s2, changed(other))).ok);
  t.true(lines(table).includes('TCP/10.96.0.10:80 10.244.1.11:8080 10.244.2.12:8080'), 'web keeps it');
  t.is(records.filter((r) => /two Service ports want one address:port/.test(String(r.msg))).length, 1);
  const s3 = nodeState([other]);
  t.true((await syncBackend(b, s3, changed(web))).ok);
  t.true(lines(table).includes('TCP/10.96.0.10:80 10.244.3.13:8080'), 'the waiting port took it in the same sync');
  t.false(lines(table).some((l) => l.startsWith('TCP/192.168.0.2:30080')), 'web\'s NodePort is gone');
});

test('schedulers: rr, lc, p2c and sh are the forwarder\'s own; another falls back to the default, said once', async (t) => {
  const { table, backend } = lab();
  const { log, records } = recordingLogger();
  const b = backend({ settings: { scheduler: 'lc' } }, log);
  const ports = ['rr', 'lc', 'p2c', 'sh', 'wrr', undefined].map((name, i) => svc({
    name: `shop/s${i}:http`, clusterIP: `10.96.1.${i}`, port: 80, clusterEndpoints: [ep('10.244.1.1', 80)],
    ...(name ? { scheduler: { name: name as 'rr', flags: [] } } : {}),
  }));
  const s = nodeState(ports);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  const algo = Object.fromEntries(table.table.listeners.map((l) => [l.ip, l.algorithm]));
  t.deepEqual(algo, { '10.96.1.0': 'rr', '10.96.1.1': 'lc', '10.96.1.2': 'p2c', '10.96.1.3': 'sh', '10.96.1.4': 'lc', '10.96.1.5': 'lc' });
  t.is(records.filter((r) => /has no such scheduler/.test(String(r.msg))).length, 1);
  t.regex(b.describeService(s, ports[4].key).join('\n'), /asks for wrr, which the forwarder does not have: lc instead/);
});

test('SCTP is not served: no listener, no address; render says so', async (t) => {
  const { table, backend, fake } = lab();
  const b = backend();
  const sctp = svc({ name: 'shop/sig', clusterIP: '10.96.0.21', port: 9999, protocol: 'SCTP', clusterEndpoints: [ep('10.244.2.101', 9999)] });
  const s = nodeState([web, sctp]);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  t.false(table.table.listeners.some((l) => l.ip === '10.96.0.21'));
  t.deepEqual(fake.trace({ family: 4, src: '10.244.2.200', dst: '10.96.0.21', dport: 9999, protocol: 'SCTP', from: 'pod' }).map((o) => o.verdict), ['accept']);
  t.regex(b.render(s), /# not served: 4\/shop\/sig\/SCTP: SCTP is not forwarded in userspace mode/);
});

test('NodePorts listen on the node addresses --nodeport-addresses allows; UDP NodePorts on concrete addresses too', async (t) => {
  const { table, backend } = lab([nodeIP, '10.99.0.1', '127.0.0.1', 'fd00:192::2']);
  const b = backend({ nodePortAddresses: ['192.168.0.0/24', 'fd00:192::/64'] });
  const udpNp = svc({ name: 'kube-system/dns-np:dns', clusterIP: '10.96.0.54', port: 53, protocol: 'UDP', nodePort: 30053, clusterEndpoints: [ep('10.244.2.91', 53)] });
  const v6 = svc({ name: 'shop/v6', clusterIP: 'fd00:96::22', port: 80, nodePort: 30084, clusterEndpoints: [ep('fd00:244:2::11', 80)] });
  const s = nodeState([web, udpNp, v6]);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  t.deepEqual(table.table.listeners.filter((l) => l.port >= 30000).map((l) => `${l.protocol}/${l.ip}:${l.port}`).sort(), [
    'TCP/192.168.0.2:30080', 'TCP/fd00:192::2:30084', 'UDP/192.168.0.2:30053',
  ]);
  // The node's own addresses (and other nodes') are never made Service addresses.
  const withNodeIP = svc({ name: 'shop/ext-node', clusterIP: '10.96.0.55', port: 8443, externalIPs: [nodeIP], clusterEndpoints: [ep('10.244.1.1', 8443)] });
  const s2 = nodeState([web, udpNp, v6, withNodeIP]);
  t.true((await syncBackend(b, s2, changed(withNodeIP))).ok);
  t.true(table.table.listeners.some((l) => l.ip === nodeIP && l.port === 8443));
  t.false((await b.readKernel()).includes(`address ${nodeIP}`));
});

test('externalTrafficPolicy Local: outside clients get the local endpoints, the cluster (pods, node addresses) every endpoint', async (t) => {
  const { table, backend } = lab();
  const b = backend();
  const etp = svc({
    name: 'shop/etp', clusterIP: '10.96.0.15', port: 80, nodePort: 30081, loadBalancerIPs: ['198.51.100.8'], externalPolicyLocal: true, healthCheckNodePort: 32000,
    clusterEndpoints: [ep('10.244.1.61', 80, { isLocal: true }), ep('10.244.2.62', 80)], localEndpoints: [ep('10.244.1.61', 80, { isLocal: true })],
  });
  const s = nodeState([etp]);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  const lb = table.table.listeners.find((l) => l.ip === '198.51.100.8')!;
  t.deepEqual(lb.remote.endpoints.map((e) => e.ip), ['10.244.1.61']);
  t.deepEqual(lb.fromCluster?.endpoints.map((e) => e.ip), ['10.244.1.61', '10.244.2.62']);
  t.true(table.table.clusterSources.includes('10.244.0.0/16'));
  t.true(table.table.clusterSources.includes(`${nodeIP}/32`));
});

test('checkDrift: a Service address taken away is put back alone; kproxy0 deleted or a new node address need a full sync; nothing changed is nothing', async (t) => {
  const { fake, backend, calls } = lab();
  const b = backend();
  const s = nodeState([web, dns]);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  t.deepEqual(await b.checkDrift(), { damage: [] });
  await fake.exec('ip', ['-batch', '-'], 'address del 10.96.0.53/32 dev kproxy0\n');
  t.deepEqual(await b.checkDrift(), { damage: [{ what: 'address', object: '10.96.0.53' }] });
  calls.length = 0;
  const repaired = await syncBackend(b, s, noChanges);
  t.true(repaired.ok);
  t.false(repaired.full, 'a targeted repair');
  t.deepEqual(repaired.repairs, [{ what: 'address', object: '10.96.0.53' }]);
  t.deepEqual(calls, ['ip address replace 10.96.0.53/32 dev kproxy0 metric 7717'], 'only the address goes back');
  t.deepEqual(await b.checkDrift(), { damage: [] });
  await fake.exec('ip', ['link', 'del', 'kproxy0']);
  const gone = await b.checkDrift();
  t.is(gone.full, 'kproxy0 is absent');
  const rebuilt = await syncBackend(b, s, noChanges);
  t.true(rebuilt.ok, rebuilt.error?.message);
  t.true(rebuilt.full);
  t.deepEqual(rebuilt.repairs, [{ what: 'full', object: 'kproxy0 is absent' }]);
  t.deepEqual(await b.checkDrift(), { damage: [] }, 'kproxy0 made again and its addresses put back');
  t.regex(await b.readKernel(), /^address 10\.96\.0\.53$/m);
});

test('checkDrift: the node gaining an address (NodePorts follow it) asks for a full sync, which listens there too', async (t) => {
  const local = [nodeIP];
  const { table, backend } = lab(local);
  const b = backend();
  const s = nodeState([web]);
  t.true((await syncBackend(b, s, fullChanges(s))).ok);
  (local as string[]).push('10.99.0.7');
  const r = await b.checkDrift();
  t.regex(r.full ?? '', /the node's addresses changed \(NodePorts on 10\.99\.0\.7, 192\.168\.0\.2\)/);
  t.true((await syncBackend(b, s, noChanges)).full);
  t.true(table.table.listeners.some((l) => l.ip === '10.99.0.7' && l.port === 30080));
});

test('render and describeService agree: each port\'s lines are the render\'s, NodePorts as * until the node is read', (t) => {
  const b = mode.create(opts, silentLogger());
  const other = svc({ name: 'shop/other:http', clusterIP: '10.96.0.11', port: 80, clusterEndpoints: [ep('10.244.3.13', 8080)], affinityTimeoutSeconds: 60 });
  const s: NodeState = nodeState([web, dns, other]);
  const rendered = b.render(s).split('\n');
  const described = [...s.services.keys()].flatMap((k) => b.describeService!(s, k));
  t.deepEqual(described.filter((l) => !rendered.includes(l)), []);
  t.true(rendered.includes('listen TCP *:30080 "shop/web:http" rr -> 10.244.1.11:8080 10.244.2.12:8080'), rendered.join('\n'));
  t.true(rendered.includes('listen TCP 10.96.0.11:80 "shop/other:http" rr affinity 60s -> 10.244.3.13:8080'));
  t.true(rendered.includes('address 10.96.0.53'));
  t.false(/[^\x20-\x7e\n]/.test(rendered.join('\n')), 'printable ASCII only');
});

test('settings: flags and the userspace block, kube-proxy\'s top-level udpIdleTimeout, lists of durations; every problem listed', (t) => {
  const problems: string[] = [];
  const file = new Map<string, { value: unknown; where: string }>([
    ['udpIdleTimeout', { value: '250ms', where: 'c.yaml:3: udpIdleTimeout' }],
    ['userspace.connectTimeouts', { value: ['100ms', '1s'], where: 'c.yaml:5: userspace.connectTimeouts' }],
    ['userspace.workers', { value: 1, where: 'c.yaml:6: userspace.workers' }],
  ]);
  const got = modeSettings('userspace', new Map<string, unknown>([['userspace-relay', 'node']]), file, problems);
  t.deepEqual(problems, []);
  t.like(got.values, { udpIdleTimeout: 250, connectTimeouts: [100, 1000], workers: 1, relay: 'node', scheduler: 'rr', handoverTimeout: 60_000 });
  const bad: string[] = [];
  modeSettings('userspace', new Map<string, unknown>([['userspace-relay', 'quantum'], ['userspace-connect-timeouts', '1s,soon'], ['userspace-scheduler', 'wrr']]), new Map(), bad);
  t.deepEqual(bad, [
    '--userspace-relay: must be auto, native or node',
    '--userspace-scheduler: must be one of rr, lc, p2c, sh',
    '--userspace-connect-timeouts: "soon" is not a list of durations (e.g. 250ms,500ms,1s)',
  ]);
});
