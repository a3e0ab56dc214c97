// End to end in a real IPVS kernel (user-mode-linux, booted once for this
// file): batches rendered by the IPVS mode's typed lines program a node
// namespace; three backend namespaces and a client namespace send real
// TCP and UDP traffic through the virtual servers.
import test from 'ava';
import { LineBatch } from '../modes/ipvs/batch.ts';
import { FakeIpvsKernel } from '../modes/ipvs/fake-kernel.ts';
import { ipLines } from '../modes/ipvs/ip-batch.ts';
import { ipvsLines, type IpvsCommand, type ServiceKey } from '../modes/ipvs/ipvsadm.ts';
import { traceIpvs } from '../modes/ipvs/tracer.ts';
import { bootUml, type Uml } from './helpers/uml.ts';
import { connectManyInUml, createUmlSandbox, startUmlBackends, type UmlBackends, type UmlSandbox } from './helpers/uml-sandbox.ts';

const tcpPort = 8080;
const udpPort = 5353;
const vip = '10.96.0.10';

let uml: Uml;
let sandbox: UmlSandbox;
let backends: UmlBackends | undefined;

test.before(async (t) => {
  uml = await bootUml();
  t.log(`boot ${uml.bootMs} ms, modules ${uml.modulesMs} ms`);
  sandbox = await createUmlSandbox(uml, { pods: 3 });
  backends = await startUmlBackends(uml, sandbox.pods, { tcp: [tcpPort], udp: [udpPort] });
});
test.after.always(async () => {
  await backends?.stop();
  await sandbox?.destroy();
  await uml?.halt();
});

function servicesBatch(service: ServiceKey, port: number): LineBatch<IpvsCommand> {
  const batch = new LineBatch(ipvsLines).add({ verb: 'add', object: 'service', service, spec: { scheduler: 'rr' } });
  for (const pod of sandbox.pods) batch.add({ verb: 'add', object: 'server', service, server: { address: pod.ip, port }, weight: 1 });
  if (batch.error) throw batch.error;
  return batch;
}

test.serial('rr over three masqueraded real servers: 30 TCP connections give exactly 10/10/10; UDP answers through the same address', async (t) => {
  const tcp: ServiceKey = { protocol: 'tcp', address: vip, port: 80 };
  const udp: ServiceKey = { protocol: 'udp', address: vip, port: 80 };
  const ipvs = `${servicesBatch(tcp, tcpPort)}${servicesBatch(udp, udpPort)}`;
  const links = new LineBatch(ipLines)
    .add({ verb: 'add', object: 'link', device: 'kube-ipvs0', kind: 'dummy' })
    .add({ verb: 'add', object: 'address', device: 'kube-ipvs0', address: vip });
  t.is(links.error, undefined);
  await sandbox.exec(sandbox.node, ['ip', '-batch', '-'], { input: links.toString() });
  await sandbox.exec(sandbox.node, ['ipvsadm', '-R'], { input: ipvs });

  // The kernel holds what was sent, as the fake kernel lists it.
  const fake = new FakeIpvsKernel();
  fake.applyIpvsadm(ipvs);
  t.is((await sandbox.exec(sandbox.node, ['ipvsadm', '-Sn'])).stdout, fake.ipvsadmSave());

  const r = await connectManyInUml(uml, sandbox.client, vip, 80, { count: 30, concurrency: 1, timeoutMs: 5000 });
  t.is(r.answered, 30, JSON.stringify(r));
  t.deepEqual(r.byBackend, { 'pod-1': 10, 'pod-2': 10, 'pod-3': 10 });
  // The tracer agrees on where rr may send a new connection.
  fake.applyIp(links.toString());
  const traced = traceIpvs(fake, { src: '192.168.50.2', dst: vip, protocol: 'tcp', dport: 80 });
  t.deepEqual(traced.servers.map((s) => s.address).sort(), sandbox.pods.map((p) => p.ip));

  const u = await connectManyInUml(uml, sandbox.client, vip, 80, { protocol: 'udp', count: 3, concurrency: 1, timeoutMs: 5000 });
  t.is(u.answered, 3, JSON.stringify(u));
  t.deepEqual(Object.keys(u.byBackend).sort().every((b) => /^pod-[123]$/.test(b)), true);
  t.deepEqual((await sandbox.exec(sandbox.node, ['ipvsadm', '-Ln', '-u', `${vip}:80`, '--stats'])).stdout.split('\n')[2].trim().split(/\s+/).slice(0, 2), ['UDP', `${vip}:80`]);
});
