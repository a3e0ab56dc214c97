// The IPVS mode's backend against its fake dataplane (the fake IPVS kernel,
// ipsets, kube-ipvs0 and iptables, run through the same Exec as the real
// tools): one batch per tool per sync and only what changed, graceful
// termination, adoption of what a previous run left, repair after a
// failure or a foreign change, schedulers, cleanup, dump and explain.
import test from 'ava';
import type { Exec } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import type { ModeOptions } from '../modes/backend.ts';
import { IpvsBackend } from '../modes/ipvs/backend.ts';
import { FakeIpvsDataplane } from '../modes/ipvs/fake.ts';
import { ipvsMode } from '../modes/ipvs/mode.ts';
import { syncBackend } from '../modes/sync.ts';
import { fullChanges, noChanges, type Changes, type NodeState, type ServicePortState } from '../proxy/model.ts';
import { ep, nodeState, svc } from './helpers/state.ts';

const nodeIP = '192.168.0.2';
const pod = '10.244.2.200';

interface Rig {
  readonly fake: FakeIpvsDataplane;
  readonly backend: IpvsBackend;
  /** Batches sent since the last take(), as "tool args: input". */
  take(): { tool: string; args: string; input: string }[];
  advance(ms: number): void;
  /** Every command run, as "tool args" (batches and reads alike). */
  readonly calls: string[];
  sync(state: NodeState, changes?: Changes): Promise<Awaited<ReturnType<typeof syncBackend>>>;
}

function rig(settings: Record<string, unknown> = {}, extra: Partial<ModeOptions> = {}, fake = new FakeIpvsDataplane({ localAddresses: [nodeIP] })): Rig {
  let sent: { tool: string; args: string; input: string }[] = [];
  let now = 1_000_000;
  const calls: string[] = [];
  const exec: Exec = async (tool, args, input) => {
    calls.push(`${tool.split('/').pop()} ${args.join(' ')}`);
    const r = await fake.exec(tool, args, input);
    if (input) sent.push({ tool: tool.split('/').pop()!, args: args.join(' '), input });
    return r;
  };
  const opts: ModeOptions = { families: [4], clusterCIDRs: ['10.244.0.0/16'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec, settings, ...extra };
  const backend = new IpvsBackend(opts, silentLogger(), { now: () => now, drainCheckMs: 3_600_000 });
  return {
    fake, backend, calls,
    take() {
      const out = sent;
      sent = [];
      return out;
    },
    advance(ms) { now += ms; },
    sync: (state, changes = fullChanges(state)) => syncBackend(backend, state, changes),
  };
}

const changed = (...keys: string[]): Changes => ({ full: false, services: new Set(keys), staleUdpEndpoints: [], staleUdpServiceIPs: [] });
const eps = (n: number, port = 8080) => Array.from({ length: n }, (_, i) => ep(`10.244.2.${11 + i}`, port));
const web = (n = 3, extra: Partial<ServicePortState> = {}): ServicePortState =>
  svc({ name: 'shop/web:http', clusterIP: '10.96.0.10', port: 80, clusterEndpoints: eps(n), ...extra });
const trace = (fake: FakeIpvsDataplane, dst = '10.96.0.10', dport = 80, protocol: 'TCP' | 'UDP' = 'TCP') =>
  fake.trace({ family: 4, src: pod, dst, dport, protocol, from: 'pod' }).map((o) => o.endpoint ?? o.verdict).sort();

test('the first sync programs everything in one batch per tool; a Service without changes sends nothing', async (t) => {
  const r = rig();
  const state = nodeState([web()]);
  const s = await r.sync(state);
  t.true(s.ok, s.error?.message);
  const tools = r.take().map((b) => `${b.tool} ${b.args}`);
  // The scheduler probe is one ipvsadm -R of its own at start-up; the sync's batches run side by side.
  t.is(tools[0], 'ipvsadm -R');
  t.deepEqual(tools.slice(1).sort(), ['ip -batch -', 'ipset restore -exist', 'iptables-legacy-restore --noflush -w', 'ipvsadm -R']);
  t.deepEqual(trace(r.fake), ['10.244.2.11:8080', '10.244.2.12:8080', '10.244.2.13:8080']);
  const again = await r.sync(state, noChanges);
  t.true(again.ok);
  t.is(again.size, 0);
  t.deepEqual(r.take(), []);
});

test('an endpoint removed: one ipvsadm -R line, weight 0, no other tool; the drain deletes it once it has no connections', async (t) => {
  const r = rig();
  const before = web(3);
  await r.sync(nodeState([before]));
  r.take();
  const after = web(2);
  const s = await r.sync(nodeState([after]), changed(after.key));
  t.true(s.ok, s.error?.message);
  t.deepEqual(r.take(), [{ tool: 'ipvsadm', args: '-R', input: '-e -t 10.96.0.10:80 -r 10.244.2.13:8080 -m -w 0\n' }]);
  // New connections avoid it; the kernel still holds it for the ones it serves.
  t.deepEqual(trace(r.fake), ['10.244.2.11:8080', '10.244.2.12:8080']);
  const vs = { protocol: 'tcp', address: '10.96.0.10', port: 80 } as const;
  r.fake.kernel.setConnections(vs, { address: '10.244.2.13', port: 8080 }, { active: 1 });
  await r.backend.drainOnce();
  t.deepEqual(r.take(), [], 'an established connection keeps it');
  // Closed by the client, the server may still be sending: an inactive connection in FIN_WAIT keeps it too.
  r.fake.kernel.setConnections(vs, { address: '10.244.2.13', port: 8080 }, { active: 0, inactive: 1 });
  r.fake.connections.push('TCP C0A84D0A A1D5 0A60000A 0050 0AF4020D 1F90 FIN_WAIT         59');
  await r.backend.drainOnce();
  t.deepEqual(r.take(), [], 'a half-closed connection keeps it');
  // Only TIME_WAIT left (IPVS keeps it two minutes; it needs no server): done.
  r.fake.connections[0] = 'TCP C0A84D0A A1D5 0A60000A 0050 0AF4020D 1F90 TIME_WAIT       119';
  await r.backend.drainOnce();
  t.deepEqual(r.take(), [{ tool: 'ipvsadm', args: '-R', input: '-d -t 10.96.0.10:80 -r 10.244.2.13:8080\n' }]);
  t.is(r.fake.kernel.service(vs)?.servers.length, 2);
  await r.backend.drainOnce();
  t.deepEqual(r.take(), [], 'nothing left to drain');
});

test('a draining server is deleted at the end of --ipvs-graceful-termination-period even with connections', async (t) => {
  const r = rig({ gracefulTerminationPeriod: 10_000 });
  await r.sync(nodeState([web(3)]));
  const after = web(2);
  await r.sync(nodeState([after]), changed(after.key));
  const vs = { protocol: 'tcp', address: '10.96.0.10', port: 80 } as const;
  r.fake.kernel.setConnections(vs, { address: '10.244.2.13', port: 8080 }, { active: 4, inactive: 9 });
  r.take();
  r.advance(9_000);
  await r.backend.drainOnce();
  t.deepEqual(r.take(), []);
  r.advance(1_000);
  await r.backend.drainOnce();
  t.deepEqual(r.take(), [{ tool: 'ipvsadm', args: '-R', input: '-d -t 10.96.0.10:80 -r 10.244.2.13:8080\n' }]);
});

test('a server that comes back while it drains gets its weight back; UDP servers go at once', async (t) => {
  const r = rig();
  const dns = (n: number) => svc({ name: 'kube-system/dns:dns', clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', clusterEndpoints: eps(n, 53) });
  await r.sync(nodeState([web(3), dns(2)]));
  r.take();
  await r.sync(nodeState([web(2), dns(1)]), changed(web().key, dns(1).key));
  t.deepEqual(r.take().map((b) => b.input), ['-e -t 10.96.0.10:80 -r 10.244.2.13:8080 -m -w 0\n-d -u 10.96.0.53:53 -r 10.244.2.12:53\n']);
  await r.sync(nodeState([web(3), dns(1)]), changed(web().key));
  t.deepEqual(r.take().map((b) => b.input), ['-e -t 10.96.0.10:80 -r 10.244.2.13:8080 -m -w 1\n']);
  r.fake.kernel.setConnections({ protocol: 'tcp', address: '10.96.0.10', port: 80 }, { address: '10.244.2.13', port: 8080 }, { active: 0 });
  await r.backend.drainOnce();
  t.deepEqual(r.take(), [], 'no longer draining');
});

test('a removed Service drains as a whole: its address stays until its last connection is gone', async (t) => {
  const r = rig();
  const other = svc({ name: 'shop/api:http', clusterIP: '10.96.0.11', port: 80, clusterEndpoints: eps(1) });
  await r.sync(nodeState([web(2), other]));
  r.take();
  await r.sync(nodeState([other]), changed(web().key));
  const sent = r.take();
  t.deepEqual(sent.map((b) => `${b.tool} ${b.args}`), ['ipset restore', 'ipvsadm -R']);
  t.regex(sent[0].input, /^del KUBE-CLUSTER-IP 10\.96\.0\.10,tcp:80$/m);
  t.notRegex(sent[0].input, /KUBE-IPVS-IPS/, 'the address stays while the Service drains');
  t.is(sent[1].input, '-e -t 10.96.0.10:80 -r 10.244.2.11:8080 -m -w 0\n-e -t 10.96.0.10:80 -r 10.244.2.12:8080 -m -w 0\n');
  t.deepEqual(trace(r.fake), ['reset'], 'new connections to the gone Service are refused');
  await r.backend.drainOnce();
  t.deepEqual(r.take().map((b) => `${b.tool}: ${b.input}`), [
    'ipvsadm: -d -t 10.96.0.10:80 -r 10.244.2.11:8080\n-d -t 10.96.0.10:80 -r 10.244.2.12:8080\n-D -t 10.96.0.10:80\n',
    'ip: address del 10.96.0.10/32 dev kube-ipvs0\n',
    'ipset: del KUBE-IPVS-IPS 10.96.0.10\n',
  ]);
  t.deepEqual(r.fake.kernel.links.get('kube-ipvs0')?.addresses, ['10.96.0.11']);
  t.deepEqual(await r.backend.checkDrift(), { damage: [] }, 'the record agrees with the kernel');
});

test('a restart adopts what the previous run left without a flush; weight-0 servers it finds drain or come back', async (t) => {
  const first = rig();
  const np = svc({ name: 'shop/np:http', clusterIP: '10.96.0.12', port: 80, nodePort: 30080, externalPolicyLocal: true, clusterEndpoints: eps(2), localEndpoints: [ep('10.244.1.9', 8080, { isLocal: true })] });
  await first.sync(nodeState([web(3), np]));
  // The previous run had started to drain .13 and .12 when it stopped.
  first.fake.kernel.applyIpvsadm('-e -t 10.96.0.10:80 -r 10.244.2.13:8080 -m -w 0\n-e -t 10.96.0.10:80 -r 10.244.2.12:8080 -m -w 0\n');
  const marks = [...first.fake.kernel.services.values()].filter((v) => 'fwmark' in v.key).map((v) => JSON.stringify(v.key));
  const second = rig({}, {}, first.fake);
  second.take();
  const s = await second.sync(nodeState([web(2), np]));
  t.true(s.ok, s.error?.message);
  const sent = second.take();
  const ipvsadm = sent.filter((b) => b.tool === 'ipvsadm').map((b) => b.input);
  // Only the two weight-0 servers: .12 is wanted again, .13 is not.
  t.deepEqual(ipvsadm.at(-1), '-e -t 10.96.0.10:80 -r 10.244.2.12:8080 -m -w 1\n');
  t.false(sent.some((b) => b.tool === 'ip'), 'no address added or removed');
  t.notRegex(sent.find((b) => b.tool === 'iptables-legacy-restore')!.input, /^-I /m, 'the jumps are there already');
  t.deepEqual([...first.fake.kernel.services.values()].filter((v) => 'fwmark' in v.key).map((v) => JSON.stringify(v.key)), marks, 'the firewall mark is kept');
  // .13 drains as if this run had removed it.
  await second.backend.drainOnce();
  t.deepEqual(second.take().map((b) => b.input), ['-d -t 10.96.0.10:80 -r 10.244.2.13:8080\n']);
});

test('virtual services that are not kproxy\'s are left alone, by sync and by cleanup; so are those in --ipvs-exclude-cidrs', async (t) => {
  const r = rig({ excludeCIDRs: ['10.96.99.0/24'] });
  r.fake.kernel.applyIpvsadm('-A -t 192.168.0.2:8443 -s wlc\n-a -t 192.168.0.2:8443 -r 10.0.0.5:8443 -m -w 1\n-A -f 7 -s rr\n');
  r.fake.kernel.applyIp('link add kube-ipvs0 type dummy\naddress add 10.96.99.1/32 dev kube-ipvs0\n');
  r.fake.kernel.applyIpvsadm('-A -t 10.96.99.1:80 -s rr\n-A -t 10.96.0.77:80 -s rr\n');
  r.fake.kernel.applyIp('address add 10.96.0.77/32 dev kube-ipvs0\n');
  const s = await r.sync(nodeState([web(1)]));
  t.true(s.ok, s.error?.message);
  const left = r.fake.kernel.ipvsadmSave();
  t.regex(left, /^-A -t 192\.168\.0\.2:8443 -s wlc$/m);
  t.regex(left, /^-A -f 7 -s rr$/m);
  t.regex(left, /^-A -t 10\.96\.99\.1:80 -s rr$/m, 'excluded');
  t.notRegex(left, /10\.96\.0\.77/, 'a stale one on kube-ipvs0 goes');
  await r.backend.cleanup();
  t.is(r.fake.kernel.ipvsadmSave(), '-A -t 192.168.0.2:8443 -s wlc\n-a -t 192.168.0.2:8443 -r 10.0.0.5:8443 -m -w 1\n-A -t 10.96.99.1:80 -s rr\n-A -f 7 -s rr\n');
  t.false(r.fake.kernel.links.has('kube-ipvs0'));
  t.deepEqual([...r.fake.kernel.sets.keys()], []);
  t.notRegex(r.fake.iptables.save(4), /KUBE-/);
});

test('a failed batch (anything on ipvsadm\'s stderr) fails the sync; the next sync reads the kernel and repairs it', async (t) => {
  const r = rig();
  await r.sync(nodeState([web(3)]));
  // Someone deletes the virtual service behind kproxy.
  r.fake.kernel.applyIpvsadm('-D -t 10.96.0.10:80\n');
  const after = web(2);
  const failed = await r.sync(nodeState([after]), changed(after.key));
  t.false(failed.ok);
  t.regex(failed.error?.message ?? '', /Service not defined/);
  const full = await r.sync(nodeState([after]), changed(after.key));
  t.true(full.ok, full.error?.message);
  t.true(full.full, 'the record was forgotten: the next sync is full');
  t.deepEqual(trace(r.fake), ['10.244.2.11:8080', '10.244.2.12:8080']);
});

test('checkDrift() finds nothing while the kernel agrees, and names a deleted virtual service, a flushed set, a changed chain or a removed address; the next full sync repairs and reports it', async (t) => {
  // The last column: whether the repair re-adds a virtual service.
  const tamper: [string, (f: FakeIpvsDataplane) => void, string, boolean][] = [
    ['virtual-server', (f) => f.kernel.applyIpvsadm('-D -t 10.96.0.10:80\n'), '-t 10.96.0.10:80 (gone)', true],
    ['set', (f) => f.kernel.applyIpset('flush KUBE-CLUSTER-IP\n'), 'KUBE-CLUSTER-IP: 0 entries, not 1', false],
    ['chain', (f) => f.iptables.restore(4, '*nat\n:KUBE-IPVS-SERVICES - [0:0]\nCOMMIT\n'), 'ip nat KUBE-IPVS-SERVICES', false],
    ['address', (f) => f.kernel.applyIp('address del 10.96.0.10/32 dev kube-ipvs0\n'), 'kube-ipvs0: 0 addresses, not 1', false],
  ];
  for (const [what, change, object, readdsVs] of tamper) {
    const r = rig();
    await r.sync(nodeState([web(2)]));
    t.deepEqual(await r.backend.checkDrift(), { damage: [] }, what);
    change(r.fake);
    r.take();
    const found = await r.backend.checkDrift();
    t.deepEqual(found.damage, [{ what, object }], what);
    t.truthy(found.full, what);
    t.deepEqual(await r.backend.checkDrift(), { damage: [] }, `${what}: told once`);
    const s = await r.sync(nodeState([web(2)]), { ...noChanges, full: true });
    t.true(s.ok && s.full, what);
    t.deepEqual(s.repairs, [{ what, object }], `${what}: reported as repaired`);
    t.is(r.take().some((b) => b.tool === 'ipvsadm' && / -A /.test(` ${b.input}`)), readdsVs, `${what}: a virtual service re-added only where one was gone`);
    t.deepEqual(await r.backend.checkDrift(), { damage: [] }, `${what}: repaired`);
    const again = await r.sync(nodeState([web(2)]), { ...noChanges, full: true });
    t.deepEqual(again.repairs, [], `${what}: counted once`);
    t.deepEqual(trace(r.fake), ['10.244.2.11:8080', '10.244.2.12:8080'], what);
  }
});

test('checkDrift() reads the whole IPVS table every tenth check, and at once when anything else changed; a change to a service not sampled is found then', async (t) => {
  const many = Array.from({ length: 40 }, (_, i) => svc({ name: `shop/s${i}:http`, clusterIP: `10.96.1.${i + 1}`, port: 80, clusterEndpoints: eps(2) }));
  const r = rig();
  await r.sync(nodeState(many));
  const procReads = () => r.calls.filter((c) => c === 'cat /proc/net/ip_vs').length;
  // The last service: the sampling reaches it only after 13 checks.
  r.fake.kernel.applyIpvsadm('-e -t 10.96.1.40:80 -r 10.244.2.11:8080 -m -w 5\n');
  for (let i = 1; i <= 9; i++) t.deepEqual(await r.backend.checkDrift(), { damage: [] }, `check ${i}`);
  t.is(procReads(), 0);
  const tenth = await r.backend.checkDrift();
  t.is(procReads(), 1);
  t.deepEqual(tenth.damage, [{ what: 'virtual-server', object: '-t 10.96.1.40:80 (real servers changed)' }]);
  await r.sync(nodeState(many), { ...noChanges, full: true });
  t.deepEqual(await r.backend.checkDrift(), { damage: [] }, 'repaired');
  // Something else changed: the whole table is read in that same check.
  r.fake.kernel.applyIpvsadm('-D -t 10.96.1.39:80\n');
  r.fake.kernel.applyIpset('del KUBE-CLUSTER-IP 10.96.1.2,tcp:80\n');
  const both = await r.backend.checkDrift();
  t.is(procReads(), 2);
  t.deepEqual(both.damage.map((d) => d.what).sort(), ['set', 'virtual-server']);
  const s = await r.sync(nodeState(many), { ...noChanges, full: true });
  t.is(s.repairs?.length, 2);
  t.deepEqual(await r.backend.checkDrift(), { damage: [] }, 'both repaired');
  t.deepEqual(trace(r.fake, '10.96.1.39'), ['10.244.2.11:8080', '10.244.2.12:8080']);
});

test('schedulers: the node\'s --ipvs-scheduler, a Service\'s annotation with its flags, and a fallback (reported) for one IPVS lacks', async (t) => {
  const r = rig({ scheduler: 'lc' });
  r.fake.kernel.loadedSchedulers.delete('dh');
  const ports = [
    web(2),
    svc({ name: 'a/mh:p', clusterIP: '10.96.0.20', port: 80, clusterEndpoints: eps(2), scheduler: { name: 'mh', flags: ['fallback', 'port'] } }),
    svc({ name: 'a/sh:p', clusterIP: '10.96.0.21', port: 80, clusterEndpoints: eps(2), scheduler: { name: 'sh', flags: [] }, affinityTimeoutSeconds: 600 }),
    svc({ name: 'a/p2c:p', clusterIP: '10.96.0.22', port: 80, clusterEndpoints: eps(2), scheduler: { name: 'p2c', flags: [] } }),
    svc({ name: 'a/dh:p', clusterIP: '10.96.0.23', port: 80, clusterEndpoints: eps(2), scheduler: { name: 'dh', flags: ['port'] } }),
    svc({ name: 'a/rr:p', clusterIP: '10.96.0.24', port: 80, clusterEndpoints: eps(2), scheduler: { name: 'rr', flags: ['port'] } }),
  ];
  const s = await r.sync(nodeState(ports));
  t.true(s.ok, s.error?.message);
  const save = r.fake.kernel.ipvsadmSave();
  for (const line of ['-A -t 10.96.0.10:80 -s lc', '-A -t 10.96.0.20:80 -s mh -b mh-fallback,mh-port', '-A -t 10.96.0.21:80 -s sh -p 600',
    '-A -t 10.96.0.22:80 -s lc', '-A -t 10.96.0.23:80 -s lc', '-A -t 10.96.0.24:80 -s rr']) {
    t.true(save.split('\n').includes(line), `${line}\n${save}`);
  }
  t.deepEqual(s.warnings?.map((w) => `${w.key}: ${w.reason}`).sort(), [
    '4/a/dh:p/TCP: scheduler dh: its kernel module (ip_vs_dh) is missing on this node: the node\'s default (lc) applies',
    '4/a/p2c:p/TCP: scheduler p2c is the userspace mode\'s and IPVS has none: the node\'s default (lc) applies',
    '4/a/rr:p/TCP: scheduler flag port does not apply to rr: left out',
  ]);
});

test('start-up: no IPVS in the kernel, or no module for --ipvs-scheduler, stops kproxy with one message', async (t) => {
  const noIpvs: Exec = async (tool) => {
    const { ToolError } = await import('../lib/exec.ts');
    throw new ToolError(tool, [], 2, 'Can\'t initialize ipvs: Protocol not available\nAre you sure that IP Virtual Server is built in the kernel or as module?\n');
  };
  t.regex(await ipvsMode.unsupported!(noIpvs) ?? '', /--proxy-mode ipvs needs IP Virtual Server in the kernel, and this one has none \(ipvsadm: Can't initialize ipvs: Protocol not available\)/);
  const fake = new FakeIpvsDataplane({ localAddresses: [] });
  t.is(await ipvsMode.unsupported!(fake.exec), undefined);
  fake.kernel.loadedSchedulers.delete('mh');
  await t.throwsAsync(ipvsMode.checkStart!({ settings: { scheduler: 'mh' }, exec: fake.exec, masqueradeBit: 14 }),
    { code: 'KPROXY_KERNEL_MISSING', message: '--ipvs-scheduler mh: the kernel has no such scheduler (module ip_vs_mh is missing); load it or choose another scheduler' } as never);
  await t.notThrowsAsync(ipvsMode.checkStart!({ settings: { scheduler: 'sh' }, exec: fake.exec, masqueradeBit: 14 }));
  t.deepEqual([...fake.kernel.services.keys()], [], 'the probe leaves nothing behind');
});

test('kernel settings: written once, only where they differ; timeouts from the flags', async (t) => {
  const r = rig({ strictARP: true, tcpFinTimeout: 5000 });
  await r.sync(nodeState([web(1)]));
  const f = r.fake;
  for (const [k, v] of [['net.ipv4.vs.conntrack', '1'], ['net.ipv4.vs.expire_nodest_conn', '1'], ['net.ipv4.vs.expire_quiescent_template', '1'],
    ['net.ipv4.ip_forward', '1'], ['net.ipv4.conf.all.arp_ignore', '1'], ['net.ipv4.conf.all.arp_announce', '2']]) t.is(f.sysctls.get(k), v, k);
  t.deepEqual(f.timeouts, { tcp: 900, tcpFin: 5, udp: 300 });
  const second = rig({ strictARP: true, tcpFinTimeout: 5000 }, {}, f);
  f.calls.length = 0;
  await second.sync(nodeState([web(1)]));
  t.deepEqual(f.calls.filter((c) => (c.tool === 'sysctl' && c.args[0] === '-w') || c.args[0] === '--set'), [], 'nothing to change the second time');
});

test('an externalTrafficPolicy Local port: outside traffic to this node\'s endpoint, in-cluster traffic by its firewall mark to every endpoint', async (t) => {
  const r = rig();
  const lb = svc({
    name: 'shop/lb:http', clusterIP: '10.96.0.30', port: 80, nodePort: 30080, loadBalancerIPs: ['198.51.100.9'], externalPolicyLocal: true,
    clusterEndpoints: [ep('10.244.1.5', 8080, { isLocal: true }), ep('10.244.2.6', 8080)], localEndpoints: [ep('10.244.1.5', 8080, { isLocal: true })],
  });
  await r.sync(nodeState([lb]));
  const out = (from: 'pod' | 'outside' | 'node', src: string, dst: string, port: number) =>
    r.fake.trace({ family: 4, src, dst, dport: port, protocol: 'TCP', from }).map((o) => `${o.endpoint ?? o.verdict}${o.masquerade ? ' masq' : ''}`).sort();
  t.deepEqual(out('outside', '203.0.113.5', '198.51.100.9', 80), ['10.244.1.5:8080']);
  t.deepEqual(out('outside', '203.0.113.5', nodeIP, 30080), ['10.244.1.5:8080']);
  t.deepEqual(out('pod', pod, '198.51.100.9', 80), ['10.244.1.5:8080', '10.244.2.6:8080']);
  t.deepEqual(out('node', nodeIP, nodeIP, 30080), ['10.244.1.5:8080 masq', '10.244.2.6:8080 masq']);
  // The local endpoint goes: outside traffic is dropped, in-cluster traffic still served.
  const noLocal = { ...lb, localEndpoints: [], externalEndpoints: [] };
  await r.sync(nodeState([noLocal]), changed(lb.key));
  t.deepEqual(out('outside', '203.0.113.5', '198.51.100.9', 80), ['drop']);
  t.deepEqual(out('pod', pod, '198.51.100.9', 80), ['10.244.1.5:8080', '10.244.2.6:8080']);
});

test('dump renders every port\'s lines; describeService is one port\'s, looked up without walking the table', async (t) => {
  const b = ipvsMode.create({ families: [4, 6], clusterCIDRs: ['10.244.0.0/16'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14 }, silentLogger());
  const target = svc({ name: 'shop/cart:http', clusterIP: '10.0.0.5', port: 80, nodePort: 30080, clusterEndpoints: [ep('10.244.0.7', 8080, { isLocal: true }), ep('10.244.3.9', 8080)] });
  const others = (n: number) => Array.from({ length: n }, (_, i) => svc({ name: `ns/other-${i}:p`, clusterIP: `10.1.${i >> 8}.${i & 255}`, port: 80, nodePort: 31000 + i, clusterEndpoints: [ep(`10.2.${i >> 8}.${i & 255}`, 8080)] }));
  const lines = b.describeService!(nodeState([target, ...others(10)]), target.key);
  t.true(lines.includes('-A -t 10.0.0.5:80 -s rr'), lines.join('\n'));
  t.true(lines.includes('-A -t 192.168.0.2:30080 -s rr'), lines.join('\n'));
  t.true(lines.includes('add KUBE-IPVS-LOOP-BACK 10.244.0.7,tcp:8080,10.244.0.7'), lines.join('\n'));
  t.true(lines.includes('address add 10.0.0.5/32 dev kube-ipvs0'), lines.join('\n'));
  t.deepEqual(lines.filter((l) => /other-|10\.[12]\.|\b31\d{3}\b/.test(l)), []);
  t.deepEqual(b.describeService!(nodeState([...others(2000), target]), target.key), lines);
  // One port is looked up, never the whole table.
  const services = new Map([target, ...others(2000)].map((x) => [x.key, x]));
  const noWalk: NodeState = { nodeName: 'node-a', nodeIPs: ['192.168.0.2'], services: { get: (k: string) => services.get(k), has: (k: string) => services.has(k), get size(): number { throw new Error('walked'); } } as unknown as ReadonlyMap<string, ServicePortState> };
  t.deepEqual(b.describeService!(noWalk, target.key), lines);
  const state = nodeState([target, ...others(12)]);
  const rendered = new Set(b.render(state).split('\n'));
  const described = [...state.services.keys()].flatMap((k) => b.describeService!(state, k));
  t.deepEqual(described.filter((l) => !rendered.has(l)), []);
});

test('an incremental sync among 1,000 Services sends only the change', async (t) => {
  const r = rig();
  const ports = Array.from({ length: 1000 }, (_, i) => svc({ name: `ns/s${i}:p`, clusterIP: `10.96.${i >> 8}.${i & 255}`, port: 80, clusterEndpoints: eps(10) }));
  const s = await r.sync(nodeState(ports));
  t.true(s.ok, s.error?.message);
  t.true(s.size > 11_000);
  r.take();
  const moved = svc({ name: 'ns/s500:p', clusterIP: '10.96.1.244', port: 80, clusterEndpoints: [...eps(9), ep('10.244.9.9', 8080)] });
  const next = nodeState([...ports.filter((p) => p.key !== moved.key), moved]);
  const inc = await r.sync(next, changed(moved.key));
  t.true(inc.ok);
  t.is(inc.size, 2);
  t.deepEqual(r.take(), [{ tool: 'ipvsadm', args: '-R', input: '-a -t 10.96.1.244:80 -r 10.244.9.9:8080 -m -w 1\n-e -t 10.96.1.244:80 -r 10.244.2.20:8080 -m -w 0\n' }]);
});

test('on a kernel without IPVS, `kproxy --proxy-mode ipvs` stops at start-up with one message (and runs where the kernel has it)', async (t) => {
  const { createNetns, run: runTool } = await import('./helpers/netns.ts');
  const { netnsExec, toolPath } = await import('../lib/exec.ts');
  const { kproxyBin, kproxyNodeFlags } = await import('./helpers/kproxy-process.ts');
  const { spawn } = await import('node:child_process');
  const ns = await createNetns('kproxy-ipvs-start');
  t.teardown(() => runTool(toolPath('ip'), ['netns', 'del', ns]).then(() => undefined, () => undefined));
  const why = await ipvsMode.unsupported!(netnsExec(ns));
  const fixture = new URL('../examples/cluster.yaml', import.meta.url).pathname;
  const child = spawn(toolPath('ip'), ['netns', 'exec', ns, process.execPath, ...kproxyNodeFlags(), kproxyBin, '--proxy-mode', 'ipvs',
    '--source-file', fixture, '--hostname-override', 'node-a', '--healthz-bind-address', '127.0.0.1:0', '--metrics-bind-address', ''], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { out += s; });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  if (why) {
    t.is(await exit, 1, out);
    t.true(out.includes(`kproxy: KPROXY_KERNEL_MISSING: ${why}\n`), out);
    t.regex(why, /^--proxy-mode ipvs needs IP Virtual Server in the kernel, and this one has none \(ipvsadm: .+\); load the ip_vs module or choose another --proxy-mode$/);
  } else {
    // This host's kernel has IPVS: kproxy gets past the check and syncs.
    for (const until = Date.now() + 60_000; !out.includes('first sync done') && Date.now() < until;) await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGKILL');
    await exit;
    t.regex(out, /first sync done/);
  }
});
