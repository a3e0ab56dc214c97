// The IPVS mode as an operator runs it, in a real IPVS kernel (one
// user-mode-linux guest for this file): the real kproxy process in a node
// namespace, four backend pods, a client namespace with many addresses, and
// real TCP traffic through the schedulers a Service asks for by annotation:
// rr spreads exactly, lc avoids a busy endpoint, sh keeps a client, mh keeps
// most clients when an endpoint is added; a removed endpoint drains (its
// connection lives on, new ones go elsewhere, the real server goes soon
// after the connection closes); a foreign change is repaired; explain and
// diff see the kernel; a scheduler the kernel lacks is a fallback for a
// Service and stops start-up for --ipvs-scheduler.
import test from 'ava';
import { clusterYaml, type EndpointSpec, type ServiceSpec } from './e2e/cluster.ts';
import { requireKernelPrerequisites } from './helpers/netns.ts';
import { bootUml, umlModules, type Uml } from './helpers/uml.ts';
import { runUmlKproxy, startUmlKproxy, startUmlProber, type UmlKproxy, type UmlProber } from './helpers/uml-kproxy.ts';
import { addresses, connectManyInUml, createUmlSandbox, startUmlBackends, startUmlClient, type UmlBackends, type UmlClient, type UmlSandbox } from './helpers/uml-sandbox.ts';

const held = 9090;
const tcp = 8080;
const schedulerAnnotation = 'kproxy.io/scheduler';
/** Extra addresses of the client namespace, one client each for sh and mh. */
const clientAddr = (i: number): string => `192.168.50.${100 + i}`;
const clients = 40;

let uml: Uml;
let sandbox: UmlSandbox;
let backends: UmlBackends;
let client: UmlClient;
let prober: UmlProber;
let kproxy: UmlKproxy;
const sourceFile = '/run/kproxy-ipvs-e2e/cluster.yaml';
const nodeSpec = { name: 'node-a', ip: addresses.nodeIP };

const eps = (which: readonly number[]): EndpointSpec[] => which.map((i) => ({ ip: addresses.podIP(i), nodeName: 'node-a' }));
const service = (name: string, clusterIP: string, port: number, targetPort: number, endpoints: EndpointSpec[], scheduler?: string): ServiceSpec => ({
  name, clusterIP, ports: [{ name: 'p', port, targetPort }], endpoints, ...(scheduler ? { annotations: { [schedulerAnnotation]: scheduler } } : {}),
});

/** Every Service of this file, as each test has it now. */
const services = new Map<string, ServiceSpec>([
  ['rr', service('rr', '10.96.0.10', 80, tcp, eps([1, 2, 3]))],
  ['lc', service('lc', '10.96.0.11', 80, held, eps([1]), 'lc')],
  ['sh', service('sh', '10.96.0.12', 80, tcp, eps([1, 2, 3]), 'sh')],
  ['mh', service('mh', '10.96.0.13', 80, tcp, eps([1, 2, 3]), 'mh')],
  ['drain', service('drain', '10.96.0.14', 80, held, eps([1, 2, 3]))],
  ['sed', service('sed', '10.96.0.15', 80, tcp, eps([1, 2]), 'sed')],
  // externalTrafficPolicy Local, both endpoints on another node.
  ['local', {
    name: 'local', clusterIP: '10.96.0.16', type: 'NodePort', externalTrafficPolicy: 'Local', healthCheckNodePort: 30310, externalIPs: ['203.0.113.7'],
    ports: [{ name: 'p', port: 80, targetPort: tcp, nodePort: 30090 }], endpoints: [2, 3].map((i) => ({ ip: addresses.podIP(i), nodeName: 'node-b' })),
  }],
]);

async function apply(name: string, spec: ServiceSpec): Promise<void> {
  services.set(name, spec);
  const before = await kproxy.syncCount();
  await uml.exec(['sh', '-c', 'cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', sourceFile], { input: clusterYaml(nodeSpec, [...services.values()]) });
  await kproxy.waitForSyncAfter(before);
}

async function node(script: string): Promise<string> {
  return (await sandbox.exec(sandbox.node, ['sh', '-c', script])).stdout;
}

test.before(async (t) => {
  requireKernelPrerequisites();
  // Without ip_vs_sed: this kernel cannot load it on demand (its modprobe looks elsewhere).
  // With br_netfilter, as clusters with a bridge CNI have it: a pod's traffic to
  // another pod through a Service comes back through the node's netfilter.
  uml = await bootUml({ modules: [...umlModules.filter((m) => m !== 'ip_vs_sed'), 'br_netfilter'] });
  sandbox = await createUmlSandbox(uml, { pods: 4 });
  await sandbox.exec(sandbox.client, ['sh', '-c', Array.from({ length: clients }, (_, i) => `ip addr add ${clientAddr(i)}/24 dev eth0`).join('\n')]);
  backends = await startUmlBackends(uml, sandbox.pods, { tcp: [tcp], held: [held] });
  client = await startUmlClient(uml, sandbox.client);
  prober = await startUmlProber(uml, sandbox.node);
  await uml.exec(['sh', '-c', 'mkdir -p "$(dirname "$1")" && cat > "$1"', 'sh', sourceFile], { input: clusterYaml(nodeSpec, [...services.values()]) });
  const started = Date.now();
  kproxy = await startUmlKproxy(uml, sandbox, prober, {
    mode: 'ipvs', sourceFile,
    // A FIN-closed connection stays an inactive IPVS connection for the tcpfin timeout: keep it short.
    // NodePorts on the Node object's address only, so that diff's scratch namespace builds the same ones.
    extraArgs: ['--ipvs-tcpfin-timeout', '2s', '--ipvs-sync-period', '3s', '--nodeport-addresses', 'primary'],
  });
  t.log(`kproxy healthy ${Date.now() - started} ms after it started in the guest`);
});
test.after.always(async () => {
  await kproxy?.stop('SIGKILL');
  await client?.stop();
  await prober?.stop();
  await backends?.stop();
  await sandbox?.destroy();
  await uml?.halt();
});

test.serial('the kernel settings kproxy needs are set in the node\'s namespace', async (t) => {
  const out = (await node('sysctl -n net.ipv4.vs.conntrack net.ipv4.vs.expire_nodest_conn net.ipv4.vs.expire_quiescent_template net.ipv4.ip_forward; ipvsadm -Ln --timeout')).split('\n');
  t.deepEqual(out.slice(0, 4), ['1', '1', '1', '1']);
  t.is(out[4], 'Timeout (tcp tcpfin udp): 900 2 300');
  t.regex(kproxy.logs(), /"sysctl":"net\.ipv4\.vs\.expire_nodest_conn","from":"0","to":"1","msg":"kernel setting changed"/);
});

test.serial('rr: each of 3 endpoints gets exactly 10 of 30 new connections', async (t) => {
  const got: Record<string, number> = {};
  for (let i = 0; i < 30; i++) {
    const r = await client.once('10.96.0.10', 80);
    t.is(r.kind, 'ok', JSON.stringify(r));
    got[r.answer] = (got[r.answer] ?? 0) + 1;
  }
  t.deepEqual(got, { 'pod-1': 10, 'pod-2': 10, 'pod-3': 10 });
});

test.serial('lc: new connections go away from an endpoint that holds many open ones', async (t) => {
  const open = [];
  for (let i = 0; i < 5; i++) open.push(await client.open('10.96.0.11', 80));
  t.deepEqual(open.map((c) => c.backend), Array(5).fill('pod-1'));
  await apply('lc', service('lc', '10.96.0.11', 80, held, eps([1, 2, 3]), 'lc'));
  const got: Record<string, number> = {};
  for (let i = 0; i < 10; i++) {
    const c = await client.open('10.96.0.11', 80);
    got[c.backend] = (got[c.backend] ?? 0) + 1;
    await c.close();
  }
  t.deepEqual(Object.keys(got).sort(), ['pod-2', 'pod-3'], JSON.stringify(got));
  t.regex(await node('ipvsadm -Ln -t 10.96.0.11:80'), /TCP {2}10\.96\.0\.11:80 lc/);
  for (const c of open) await c.close();
});

test.serial('sh: one client stays on one endpoint', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 20; i++) seen.add((await client.once('10.96.0.12', 80, { localAddress: clientAddr(7) })).answer);
  t.is(seen.size, 1, [...seen].join(', '));
  t.regex(await node('ipvsadm -Ln -t 10.96.0.12:80'), /10\.96\.0\.12:80 sh/);
});

test.serial('mh: most clients keep their endpoint when a fourth endpoint is added', async (t) => {
  const where = async (): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < clients; i++) {
      const r = await client.once('10.96.0.13', 80, { localAddress: clientAddr(i) });
      t.is(r.kind, 'ok', JSON.stringify(r));
      out.push(r.answer);
    }
    return out;
  };
  const before = await where();
  t.deepEqual(await where(), before, 'each client keeps its endpoint');
  t.true(new Set(before).size === 3, `the 40 clients use all three endpoints: ${before.join(' ')}`);
  await apply('mh', service('mh', '10.96.0.13', 80, tcp, eps([1, 2, 3, 4]), 'mh'));
  const after = await where();
  const kept = after.filter((b, i) => b === before[i]).length;
  const moved = after.filter((b, i) => b !== before[i]);
  t.log(`mh: ${kept} of ${clients} clients kept their endpoint; the ${moved.length} others went to ${[...new Set(moved)].join(', ')}`);
  // Maglev moves about a quarter (the share of the new endpoint); rr-style rehashing would move most.
  t.true(kept >= 0.6 * clients, `${kept} of ${clients} kept`);
  t.deepEqual([...new Set(moved)], ['pod-4'], 'clients that move go to the new endpoint only');
});

test.serial('a removed endpoint drains: its connection keeps working, new ones avoid it, and it is gone soon after the connection closes', async (t) => {
  const conn = await client.open('10.96.0.14', 80);
  t.regex(conn.backend, /^pod-[123]$/);
  t.deepEqual(await conn.ask('hello'), { kind: 'ok', answer: `${conn.backend}:hello` });
  const gone = Number(conn.backend.slice(4));
  await apply('drain', service('drain', '10.96.0.14', 80, held, eps([1, 2, 3].filter((i) => i !== gone))));
  const ip = addresses.podIP(gone);
  t.regex(await node('ipvsadm -Ln -t 10.96.0.14:80'), new RegExp(`-> ${ip.replace(/\./g, '\\.')}:${held} +Masq +0 +1 `), 'weight 0, one active connection');
  t.deepEqual(await conn.ask('still there'), { kind: 'ok', answer: `${conn.backend}:still there` });
  for (let i = 0; i < 10; i++) {
    const c = await client.open('10.96.0.14', 80);
    t.not(c.backend, conn.backend, 'a new connection avoids the draining endpoint');
    await c.close();
  }
  t.deepEqual(await conn.ask('and now'), { kind: 'ok', answer: `${conn.backend}:and now` });
  await conn.close();
  const closedAt = Date.now();
  let listing = '';
  while (Date.now() - closedAt < 20_000) {
    listing = await node('ipvsadm -Ln -t 10.96.0.14:80');
    if (!listing.includes(`${ip}:${held}`)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  t.false(listing.includes(`${ip}:${held}`), listing);
  t.log(`the real server was gone ${Date.now() - closedAt} ms after its connection closed (tcpfin timeout 2 s)`);
});

test.serial('a scheduler whose kernel module is missing: the Service falls back to the default and is reported', async (t) => {
  t.regex(await node('ipvsadm -Ln -t 10.96.0.15:80'), /10\.96\.0\.15:80 rr/);
  t.regex(kproxy.logs(), /"servicePort":"4\/default\/sed:p\/TCP","reason":"scheduler sed: its kernel module \(ip_vs_sed\) is missing on this node: the node's default \(rr\) applies","msg":"service port programmed with a fallback"/);
  const r = await client.once('10.96.0.15', 80);
  t.is(r.kind, 'ok', JSON.stringify(r));
});

test.serial('externalTrafficPolicy Local without a local endpoint: outside traffic is dropped, the node\'s and pods\' own reach every endpoint (firewall-mark virtual server)', async (t) => {
  const outside = await client.once('203.0.113.7', 80, { timeoutMs: 1500 });
  t.is(outside.kind, 'TIMEOUT', `dropped, not refused: ${JSON.stringify(outside)}`);
  const fromNode = await connectManyInUml(uml, sandbox.node, addresses.nodeIP, 30090, { count: 20, concurrency: 1, timeoutMs: 3000 });
  t.is(fromNode.answered, 20, JSON.stringify(fromNode));
  t.deepEqual(Object.keys(fromNode.byBackend).sort(), ['pod-2', 'pod-3']);
  const fromPod = await connectManyInUml(uml, sandbox.pods[0].ns, '203.0.113.7', 80, { count: 20, concurrency: 1, timeoutMs: 3000 });
  t.is(fromPod.answered, 20, JSON.stringify(fromPod));
  t.deepEqual(Object.keys(fromPod.byBackend).sort(), ['pod-2', 'pod-3']);
  t.regex(await node('ipvsadm -Ln'), /FWM {2}\d+ rr\n {2}-> 10\.180\.0\.12:8080 +Masq +1 .*\n {2}-> 10\.180\.0\.13:8080 +Masq +1 /);
});

test.serial('a foreign change to the virtual services, sets or chains is repaired after the next drift check', async (t) => {
  await node('ipvsadm -D -t 10.96.0.10:80; ipset flush KUBE-CLUSTER-IP; iptables-legacy -t nat -F KUBE-IPVS-SERVICES');
  t.is((await client.once('10.96.0.10', 80, { timeoutMs: 500 })).kind, 'ECONNREFUSED', 'broken meanwhile');
  const started = Date.now();
  let ok = false;
  while (!ok && Date.now() - started < 20_000) {
    await new Promise((r) => setTimeout(r, 500));
    const save = await node('ipvsadm -Ln -t 10.96.0.10:80 2>/dev/null; ipset list -t KUBE-CLUSTER-IP; iptables-legacy -t nat -S KUBE-IPVS-SERVICES');
    ok = /TCP  10\.96\.0\.10:80 rr/.test(save) && !/Number of entries: 0/.test(save) && /-A KUBE-IPVS-SERVICES .*KUBE-CLUSTER-IP/.test(save);
  }
  t.true(ok, 'repaired');
  t.log(`repaired ${Date.now() - started} ms after the change (--ipvs-sync-period 3s)`);
  t.regex(kproxy.logs(), /kernel rules changed behind kproxy's back; repairing/);
  // A check may run between the three commands: the chain is then rewritten by the same full sync without being named.
  // kproxy logs the repair once its sync has finished, which can be after the kernel above looks whole again.
  const repairedLine = /"repaired":\[[^\]]*"virtual-server -t 10\.96\.0\.10:80 \(gone\)"[^\]]*\].*"msg":"repaired kernel rules someone else changed"/;
  for (const until = Date.now() + 10_000; !repairedLine.test(kproxy.logs()) && Date.now() < until;) await new Promise((r) => setTimeout(r, 100));
  t.regex(kproxy.logs(), repairedLine);
  t.is((await client.once('10.96.0.10', 80)).kind, 'ok');
});

test.serial('explain shows a Service\'s virtual server with its real servers\' weights and connections; diff finds the kernel as desired', async (t) => {
  const conn = await client.open('10.96.0.14', 80);
  const args = ['--proxy-mode', 'ipvs', '--source-file', sourceFile, '--hostname-override', 'node-a', '--cluster-cidr', addresses.clusterCIDR, '--nodeport-addresses', 'primary'];
  const e = await runUmlKproxy(uml, sandbox.node, ['explain', ...args, 'default/drain']);
  t.is(e.code, 0, e.stderr);
  t.regex(e.stdout, /ipvs rules of this port \(\d+ lines\):\n {4}-A -t 10\.96\.0\.14:80 -s rr/);
  t.regex(e.stdout, /ipvs in the kernel now \(\d+ lines\):\n {4}TCP {2}10\.96\.0\.14:80 rr/);
  t.regex(e.stdout, new RegExp(`-> ${addresses.podIP(Number(conn.backend.slice(4))).replace(/\./g, '\\.')}:${held} +Masq +1 +1 `), e.stdout);
  t.regex(e.stdout, /add KUBE-CLUSTER-IP 10\.96\.0\.14,tcp:80/);
  await conn.close();
  const d = await runUmlKproxy(uml, sandbox.node, ['diff', ...args]);
  t.is(d.code, 0, `${d.stdout}\n${d.stderr}`);
  t.regex(d.stdout, /kernel rules match the desired ipvs rules/);
});

test.serial('--ipvs-scheduler naming a scheduler the kernel lacks stops start-up with one message', async (t) => {
  const r = await runUmlKproxy(uml, sandbox.node, ['--proxy-mode', 'ipvs', '--ipvs-scheduler', 'sed', '--source-file', sourceFile, '--hostname-override', 'node-a',
    '--healthz-bind-address', '127.0.0.1:10299', '--metrics-bind-address', '']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /^kproxy: KPROXY_KERNEL_MISSING: --ipvs-scheduler sed: the kernel has no such scheduler \(module ip_vs_sed is missing\); load it or choose another scheduler$/m);
});
