// Facts about the real IPVS kernel and its tools that the IPVS mode relies
// on, checked in user-mode-linux (one boot for this file); modes/ipvs/
// README.md states them. Also holds the fake kernel and the tracer against
// the real thing: the same batches, the same refusals, the same listings,
// the same scheduler choices.
import test, { type ExecutionContext } from 'ava';
import { FakeIpvsKernel } from '../modes/ipvs/fake-kernel.ts';
import { parseIpsetSave } from '../modes/ipvs/ipset.ts';
import { parseProcIpVs } from '../modes/ipvs/proc-ip-vs.ts';
import { traceIpvs } from '../modes/ipvs/tracer.ts';
import { bootUml, guestPath, type RunResult, type Uml } from './helpers/uml.ts';
import { connectManyInUml, createUmlSandbox, startUmlBackends, startUmlClient, type UmlBackends, type UmlClient, type UmlSandbox } from './helpers/uml-sandbox.ts';

let uml: Uml;
let sandbox: UmlSandbox;
let backends: UmlBackends | undefined;
let client: UmlClient | undefined;
const answerPort = 8080;
const heldPort = 9090;

test.before(async (t) => {
  uml = await bootUml();
  t.log(`boot ${uml.bootMs} ms, modules ${uml.modulesMs} ms`);
  sandbox = await createUmlSandbox(uml, { pods: 3 });
  backends = await startUmlBackends(uml, sandbox.pods, { tcp: [answerPort], held: [heldPort] });
  client = await startUmlClient(uml, sandbox.client);
});
test.after.always(async () => {
  await client?.stop();
  await backends?.stop();
  await sandbox?.destroy();
  await uml?.halt();
});

let namespaces = 0;

type Shell = ((script: string, input?: string) => Promise<RunResult>) & { readonly ns: string };

/** A shell in a fresh namespace of the guest (its own IPVS table, ipsets and links), removed after the test. */
async function freshNamespace(t: ExecutionContext): Promise<Shell> {
  const ns = `f${++namespaces}`;
  // Without lo up the namespace has no local routing table and the kernel refuses
  // every IPv4 real server ("Invalid operation ... address not unicast").
  await uml.exec(['sh', '-c', `ip netns add ${ns} && ip -n ${ns} link set lo up`]);
  t.teardown(() => uml.run(['ip', 'netns', 'del', ns]));
  return Object.assign((script: string, input?: string) => uml.run(['ip', 'netns', 'exec', ns, 'sh', '-c', script], { input }), { ns });
}

const threeServers = `-A -t 10.96.0.1:80 -s rr
-a -t 10.96.0.1:80 -r 10.180.0.11:8080 -m -w 1
-a -t 10.96.0.1:80 -r 10.180.0.12:8080 -m -w 1
-a -t 10.96.0.1:80 -r 10.180.0.13:8080 -m -w 1
`;

test('ipvsadm -R is not all-or-nothing: a refused line is reported and skipped, and the exit status is the last line\'s', async (t) => {
  const sh = await freshNamespace(t);
  const r = await sh('ipvsadm -R; echo "exit $?"; ipvsadm -Sn', '-A -t 10.96.0.1:80 -s rr\n-a -t 10.96.0.9:80 -r 10.180.0.11:80 -m -w 1\n-A -t 10.96.0.2:80 -s rr\n');
  t.is(r.stderr, 'Service not defined\n');
  t.is(r.stdout, 'exit 0\n-A -t 10.96.0.1:80 -s rr\n-A -t 10.96.0.2:80 -s rr\n');
  const last = await sh('ipvsadm -R; echo "exit $?"', '-A -t 10.96.0.3:80 -s rr\n-A -t 10.96.0.3:80 -s rr\n');
  t.is(last.stdout, 'exit 255\n');
  // An unknown option is skipped the same way; a value ipvsadm checks itself ends the run (exit 2), keeping what came before.
  const unknown = await sh('ipvsadm -R; echo "exit $?"; ipvsadm -Sn | wc -l', '-A -t 10.96.0.4:80 -s rr -q\n-A -t 10.96.0.5:80 -s rr\n');
  t.is(unknown.stdout, 'exit 0\n4\n');
  const timeout = await sh('ipvsadm -R; echo "exit $?"; ipvsadm -Sn | wc -l', '-A -t 10.96.0.6:80 -s rr\n-A -t 10.96.0.7:80 -s rr -p 0\n-A -t 10.96.0.8:80 -s rr\n');
  t.is(timeout.stdout, 'exit 2\n5\n');
  t.is(timeout.stderr, "invalid timeout value `0' specified\n");
  // Blank lines are skipped, a comment line is an error.
  t.is((await sh('ipvsadm -R; echo "exit $?"', '\n-A -t 10.96.0.9:80 -s rr\n\n')).stdout, 'exit 0\n');
  const comment = await sh('ipvsadm -R; echo "exit $?"', '-A -t 10.96.0.10:80 -s rr\n# a comment\n');
  t.is(comment.stdout, 'exit 255\n');
  t.regex(comment.stderr, /Try `ipvsadm -h'/);
});

test('ipvsadm -R takes -E, -e, -d and -D; an edit replaces the whole entry', async (t) => {
  const sh = await freshNamespace(t);
  const r = await sh('ipvsadm -R && ipvsadm -Sn', `${threeServers}-A -t 10.96.0.2:80 -s rr
-E -t 10.96.0.1:80 -s lc -p 30
-e -t 10.96.0.1:80 -r 10.180.0.11:8080 -m -w 0
-d -t 10.96.0.1:80 -r 10.180.0.12:8080
-D -t 10.96.0.2:80
`);
  t.is(r.stdout, '-A -t 10.96.0.1:80 -s lc -p 30\n-a -t 10.96.0.1:80 -r 10.180.0.11:8080 -m -w 0\n-a -t 10.96.0.1:80 -r 10.180.0.13:8080 -m -w 1\n');
  // Without -s an edit resets the scheduler to wlc and drops persistence.
  const reset = await sh('ipvsadm -R && ipvsadm -Sn', '-E -t 10.96.0.1:80\n');
  t.is(reset.stdout, '-A -t 10.96.0.1:80 -s wlc\n-a -t 10.96.0.1:80 -r 10.180.0.11:8080 -m -w 0\n-a -t 10.96.0.1:80 -r 10.180.0.13:8080 -m -w 1\n');
  // Without -m an edit means direct routing, which keeps the service's port: a server on another port is not found...
  const remapped = await sh('ipvsadm -R; echo "exit $?"', '-e -t 10.96.0.1:80 -r 10.180.0.13:8080 -w 2\n');
  t.is(remapped.stdout, 'exit 255\n');
  t.is(remapped.stderr, 'No such destination\n');
  // ...and one on the same port silently turns to direct routing (-g).
  const direct = await sh('ipvsadm -R && ipvsadm -Sn | tail -1', '-a -t 10.96.0.1:80 -r 10.180.0.14:80 -m -w 1\n-e -t 10.96.0.1:80 -r 10.180.0.14:80 -w 1\n');
  t.is(direct.stdout, '-a -t 10.96.0.1:80 -r 10.180.0.14:80 -g -w 1\n');
});

test('ipset restore stops at the first refused line (exit 1) and keeps the lines before it; ip -batch too', async (t) => {
  const sh = await freshNamespace(t);
  const r = await sh('ipset restore; echo "exit $?"; ipset save S | tail -n +2', 'create S hash:ip family inet\nadd S 10.0.0.1\nadd S 10.0.0.1\nadd S 10.0.0.2\n');
  t.is(r.stdout, 'exit 1\nadd S 10.0.0.1\n');
  t.regex(r.stderr, /Error in line 3: Element cannot be added to the set: it's already added/);
  const exist = await sh('ipset restore -exist; echo "exit $?"; ipset save S | tail -n +2 | sort', 'create S hash:ip family inet\nadd S 10.0.0.1\nadd S 10.0.0.2\ndel S 10.0.0.9\n');
  t.is(exist.stdout, 'exit 0\nadd S 10.0.0.1\nadd S 10.0.0.2\n');
  const ip = await sh('ip -batch -; echo "exit $?"; ip -o -4 addr show dev d0 | wc -l', 'link add d0 type dummy\naddress add 10.96.0.1/32 dev d0\naddress add 10.96.0.1/32 dev d0\naddress add 10.96.0.2/32 dev d0\n');
  t.is(ip.stdout, 'exit 1\n1\n');
  t.is(ip.stderr, 'RTNETLINK answers: File exists\nCommand failed -:3\n');
});

// Each case: the fake refuses the batch with a message the real tool prints too.
const refusals: { tool: 'ipvsadm' | 'ipset' | 'ip'; setup: string; batch: string }[] = [
  { tool: 'ipvsadm', setup: threeServers, batch: '-A -t 10.96.0.1:80 -s rr\n' },
  { tool: 'ipvsadm', setup: threeServers, batch: '-a -t 10.96.0.9:80 -r 10.180.0.11:80 -m -w 1\n' },
  { tool: 'ipvsadm', setup: threeServers, batch: '-a -t 10.96.0.1:80 -r 10.180.0.11:8080 -m -w 1\n' },
  { tool: 'ipvsadm', setup: threeServers, batch: '-d -t 10.96.0.1:80 -r 10.180.0.99:8080\n' },
  { tool: 'ipvsadm', setup: threeServers, batch: '-e -t 10.96.0.1:80 -r 10.180.0.99:8080 -m -w 1\n' },
  { tool: 'ipvsadm', setup: threeServers, batch: '-E -t 10.96.0.99:80 -s rr\n' },
  { tool: 'ipvsadm', setup: threeServers, batch: '-D -t 10.96.0.99:80\n' },
  ...[
    'create S hash:ip,port family inet hashsize 1024 maxelem 65536\n',
    'add NOPE 10.96.0.1\n',
    'add S 10.96.0.1,tcp:443\n',
    'del S 10.96.0.99,tcp:443\n',
    'add S 10.96.0.99\n',
    'add S 10.96.0.9,tcp:80,10.1.1.1\n',
    'add S fd00::9,tcp:80\n',
    'add P 10.96.0.1,tcp:80\n',
    'add N 1.2.3.4,tcp:80\n',
    'add N 1.2.3.4,tcp:80,10.0.0.0/8 comment "x"\n',
    'add R 80\n',
    'swap P S\n',
    'swap S S6\n',
    'add M 10.0.0.2\n',
    'flush NOPE\n',
  ].map((batch) => ({
    tool: 'ipset' as const,
    setup: `create S hash:ip,port family inet hashsize 1024 maxelem 65536 comment
add S 10.96.0.1,tcp:443 comment "default/kubernetes:https"
create S6 hash:ip,port family inet6 hashsize 1024 maxelem 65536
create N hash:ip,port,net family inet hashsize 1024 maxelem 65536
create P bitmap:port range 0-65535
create R bitmap:port range 30000-32767
create M hash:ip family inet maxelem 1
add M 10.0.0.1
`,
    batch,
  })),
  ...[
    'link add kube-ipvs0 type dummy\n',
    'address add 10.96.0.1/32 dev kube-ipvs0\n',
    'address del 10.96.0.9/32 dev kube-ipvs0\n',
    'address add 10.96.0.9/32 dev kube-ipvs1\n',
    'link del kube-ipvs1\n',
  ].map((batch) => ({ tool: 'ip' as const, setup: 'link add kube-ipvs0 type dummy\naddress add 10.96.0.1/32 dev kube-ipvs0\n', batch })),
];

test('the fake kernel refuses what the real tools refuse, in their words', async (t) => {
  const sh = await freshNamespace(t);
  const reset = { ipvsadm: 'ipvsadm -C', ipset: 'ipset destroy', ip: 'ip link del kube-ipvs0 2>/dev/null' } as const;
  const restore = { ipvsadm: 'ipvsadm -R', ipset: 'ipset restore', ip: 'ip -batch -' } as const;
  const applyTo = (fake: FakeIpvsKernel, tool: 'ipvsadm' | 'ipset' | 'ip', batch: string): void => {
    if (tool === 'ipvsadm') fake.applyIpvsadm(batch);
    else if (tool === 'ipset') fake.applyIpset(batch);
    else fake.applyIp(batch);
  };
  // One shell runs every case (a process start costs tens of ms in the guest); each
  // case prints its setup's exit status, then the refused batch's stderr.
  const script = refusals.map(({ tool, setup, batch }, i) =>
    `${reset[tool]} >/dev/null 2>&1\n${restore[tool]} <<'EOF' >/dev/null 2>&1\n${setup}EOF\necho "@@ ${i} setup $?"\n${restore[tool]} <<'EOF' 2>&1\n${batch}EOF\n`).join('');
  const out = (await sh(script)).stdout.split(/^@@ /m).slice(1);
  t.is(out.length, refusals.length);
  refusals.forEach(({ tool, setup, batch }, i) => {
    const fake = new FakeIpvsKernel();
    applyTo(fake, tool, setup);
    let message = '';
    try {
      applyTo(fake, tool, batch);
    } catch (e) {
      message = (e as Error).message.split('\n')[0].replace(/^\w+: line \d+: /, '');
    }
    t.not(message, '', `the fake accepted ${batch}`);
    const [status, ...said] = out[i].split('\n');
    t.is(status, `${i} setup 0`, `${tool} setup`);
    t.true(said.join('\n').includes(message), `${tool} ${batch.trim()}: the fake says "${message}", the tool said "${said.join(' ').trim()}"`);
  });
});

test('the fake lists a table exactly as ipvsadm -Sn and -Ln do, and its sets as ipset save does (but initval and hash order)', async (t) => {
  const sh = await freshNamespace(t);
  const batch = `-A -t [fd00::1]:80 -s wlc
-a -t [fd00::1]:80 -r [fd00:244::2]:80 -m -w 1
-A -t 10.96.0.1:80 -s rr
-a -t 10.96.0.1:80 -r 10.180.0.12:8080 -m -w 0
-a -t 10.96.0.1:80 -r 10.180.0.11:8080 -m -w 1
-a -t 10.96.0.1:80 -r 192.168.50.7:8080 -m -w 3
-A -u 10.96.0.10:53 -s sh -p 10800 -b sh-fallback,sh-port
-a -u 10.96.0.10:53 -r 10.180.0.11:53 -m -w 1
-A --sctp-service 10.96.0.2:9 -s mh -b mh-fallback,mh-port
-a --sctp-service 10.96.0.2:9 -r 10.180.0.13:9 -m -w 3
-A -t 192.168.1.1:30080 -s lc -p 60
-A -t 172.16.0.1:30080 -s nq
-A -t 10.96.0.1:443 -s sed
-A -u [fd00::1]:53 -s dh
-a -u [fd00::1]:53 -r [fd00:244::3]:53 -m -w 2
-a -u [fd00::1]:53 -r [fd00:244::2]:53 -m -w 2
`;
  const fake = new FakeIpvsKernel();
  fake.applyIpvsadm(batch);
  await sh('ipvsadm -R', batch);
  t.is((await sh('ipvsadm -Sn')).stdout, fake.ipvsadmSave());
  t.is((await sh('ipvsadm -Ln')).stdout, fake.ipvsadmList());
  const sets = `create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443 comment "default/kubernetes:https"
add KUBE-CLUSTER-IP 10.96.0.10,udp:53
add KUBE-CLUSTER-IP 10.96.0.10,sctp:53
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.180.0.11,tcp:8080,10.180.0.11
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
add KUBE-LOAD-BALANCER-SOURCE-CIDR 1.2.3.4,tcp:80,192.168.0.0/16
add KUBE-LOAD-BALANCER-SOURCE-CIDR 1.2.3.4,tcp:80,10.0.0.1/32
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
add KUBE-NODE-PORT-TCP 30001
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-IPS 10.96.0.1
create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536
add KUBE-6-CLUSTER-IP fd00::1,tcp:80
add KUBE-6-CLUSTER-IP fd00::2,udp:53
create KUBE-6-LOOP-BACK hash:ip,port,ip family inet6 hashsize 1024 maxelem 65536
add KUBE-6-LOOP-BACK fd00::2,tcp:80,fd00::2
`;
  fake.applyIpset(sets);
  await sh('ipset restore', sets);
  const normal = (text: string): string[] => text.split('\n').map((l) => l.replace(/ initval 0x[0-9a-f]{8}$/, '')).sort();
  const real = (await sh('ipset save')).stdout;
  t.deepEqual(normal(real), normal(fake.ipsetSave()));
  t.deepEqual([...parseIpsetSave(real).keys()], [...fake.sets.keys()]);
  // /proc/net/ip_vs holds the same table (weights included) without running ipvsadm.
  const proc = parseProcIpVs((await sh('cat /proc/net/ip_vs')).stdout);
  t.is(proc.length, fake.services.size);
  for (const s of proc) {
    const f = fake.service(s.service);
    t.truthy(f, `${s.service.address}:${s.service.port}`);
    t.deepEqual(s.servers.map((r) => `${r.address}:${r.port}/${r.weight}`), f!.servers.map((r) => `${r.address}:${r.port}/${r.weight}`));
  }
});

test('the tracer picks the real server the kernel picks for sh, mh and dh (weights, ports, fallback, drained servers)', async (t) => {
  const sh = await freshNamespace(t);
  const clients = Array.from({ length: 40 }, (_, i) => `192.168.${77 + (i % 3)}.${10 + i * 5}`);
  const batch = `-A -t 10.96.0.1:80 -s sh
-a -t 10.96.0.1:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.1:80 -r 10.180.0.12:80 -m -w 2
-a -t 10.96.0.1:80 -r 10.180.0.13:80 -m -w 1
-A -t 10.96.0.2:80 -s mh
-a -t 10.96.0.2:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.2:80 -r 10.180.0.12:80 -m -w 1
-a -t 10.96.0.2:80 -r 10.180.0.13:80 -m -w 3
-A -t 10.96.0.3:80 -s sh -b sh-port
-a -t 10.96.0.3:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.3:80 -r 10.180.0.12:80 -m -w 1
-a -t 10.96.0.3:80 -r 10.180.0.13:80 -m -w 1
-A -t 10.96.0.4:80 -s mh -b mh-fallback,mh-port
-a -t 10.96.0.4:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.4:80 -r 10.180.0.12:80 -m -w 0
-a -t 10.96.0.4:80 -r 10.180.0.13:80 -m -w 1
-A -t 10.96.0.5:80 -s dh
-a -t 10.96.0.5:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.5:80 -r 10.180.0.12:80 -m -w 1
-a -t 10.96.0.5:80 -r 10.180.0.13:80 -m -w 1
-A -t 10.96.0.6:80 -s dh
-a -t 10.96.0.6:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.6:80 -r 10.180.0.12:80 -m -w 1
-a -t 10.96.0.6:80 -r 10.180.0.13:80 -m -w 1
-A -t 10.96.0.7:80 -s sh -b sh-fallback
-a -t 10.96.0.7:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.7:80 -r 10.180.0.12:80 -m -w 1
-a -t 10.96.0.7:80 -r 10.180.0.13:80 -m -w 1
-e -t 10.96.0.7:80 -r 10.180.0.12:80 -m -w 0
-A -t 10.96.0.8:80 -s mh
-a -t 10.96.0.8:80 -r 10.180.0.11:80 -m -w 1
-a -t 10.96.0.8:80 -r 10.180.0.12:80 -m -w 1
-a -t 10.96.0.8:80 -r 10.180.0.13:80 -m -w 1
-e -t 10.96.0.8:80 -r 10.180.0.13:80 -m -w 0
-a -t 10.96.0.8:80 -r 10.180.0.14:80 -m -w 1
`;
  // Clients are addresses of the namespace itself; real servers are unreachable, which does not matter:
  // IPVS records its choice at the first SYN (/proc/net/ip_vs_conn).
  await sh(`ip -batch - <<'EOF'
link add kube-ipvs0 type dummy
link add cl0 type dummy
link set cl0 up
route add 10.180.0.0/24 dev cl0
${clients.map((c) => `addr add ${c}/32 dev cl0`).join('\n')}
${Array.from({ length: 8 }, (_, i) => `addr add 10.96.0.${i + 1}/32 dev kube-ipvs0`).join('\n')}
EOF
ipvsadm -R`, batch);
  const fake = new FakeIpvsKernel();
  fake.applyIpvsadm(batch);
  const attempts = [1, 2, 3, 4, 5, 6, 7, 8].flatMap((v) => clients.map((src, i) => ({ vip: `10.96.0.${v}`, src, port: 41000 + i * 11 + v })));
  const script = `const net = require('node:net'); const a = JSON.parse(process.env.A);
for (const x of a) { const s = net.connect({ host: x.vip, port: 80, localAddress: x.src, localPort: x.port }); s.on('error', () => {}); setTimeout(() => s.destroy(), 500); }
setTimeout(() => process.exit(0), 800);`;
  await uml.exec(['ip', 'netns', 'exec', sh.ns, guestPath(process.execPath), '-e', script], { env: { A: JSON.stringify(attempts) } });
  const hex = (h: string): string => h.match(/../g)!.map((b) => parseInt(b, 16)).join('.');
  const chosen = new Map<string, string>();
  for (const line of (await sh('cat /proc/net/ip_vs_conn')).stdout.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 7) chosen.set(`${hex(f[1])}:${parseInt(f[2], 16)}>${hex(f[3])}`, hex(f[5]));
  }
  let compared = 0;
  let refused = 0;
  for (const x of attempts) {
    const real = chosen.get(`${x.src}:${x.port}>${x.vip}`);
    const traced = traceIpvs(fake, { src: x.src, srcPort: x.port, dst: x.vip, protocol: 'tcp', dport: 80 });
    t.is(traced.next?.address, real, `${x.src}:${x.port} → ${x.vip}`);
    if (real === undefined) refused++;
    compared++;
  }
  t.is(compared, 320);
  t.true(refused > 0, 'mh without fallback refuses the clients of its drained server');
  t.log(`${compared} new connections: the tracer named the kernel's choice for every one (${refused} refused by both)`);
});

test('addresses on a dummy interface that stays down get local routes (kube-ipvs0 need not be up)', async (t) => {
  const sh = await freshNamespace(t);
  const r = await sh('ip -batch - && ip -o link show kube-ipvs0 && ip route show table local dev kube-ipvs0 && ip -6 route show table local dev kube-ipvs0',
    'link add kube-ipvs0 type dummy\naddress add 10.96.0.1/32 dev kube-ipvs0\naddress add fd00::1/128 dev kube-ipvs0\n');
  t.regex(r.stdout, /state DOWN/);
  t.regex(r.stdout, /^local 10\.96\.0\.1 proto kernel scope host src 10\.96\.0\.1/m);
  t.regex(r.stdout, /^local fd00::1 proto kernel metric 0/m);
});

// ---- Traffic through the node namespace of the sandbox (serial: sysctls are per namespace).

async function node(script: string, input?: string): Promise<RunResult> {
  return sandbox.exec(sandbox.node, ['sh', '-c', script], { input });
}

async function program(t: ExecutionContext, vip: string, lines: string): Promise<void> {
  await node(`ip link show kube-ipvs0 >/dev/null 2>&1 || ip link add kube-ipvs0 type dummy; ip addr add ${vip}/32 dev kube-ipvs0; ipvsadm -R`, lines);
  t.teardown(() => node(`ipvsadm -Sn | grep -- '-A .* ${vip}:' | sed 's/^-A/-D/; s/ -s .*//' | ipvsadm -R; ip addr del ${vip}/32 dev kube-ipvs0`));
}

function servers(vip: string, port: number, backendPort: number, extra = ''): string {
  return `-A -t ${vip}:${port} -s rr${extra}\n${[11, 12, 13].map((i) => `-a -t ${vip}:${port} -r 10.180.0.${i}:${backendPort} -m -w 1\n`).join('')}`;
}

function weightLine(vip: string, port: number, backendPort: number, pod: string, weight: number): string {
  return `-e -t ${vip}:${port} -r 10.180.0.${10 + Number(pod.slice(4))}:${backendPort} -m -w ${weight}\n`;
}

async function sysctl(t: ExecutionContext, name: string, value: number): Promise<void> {
  const file = `/proc/sys/net/ipv4/vs/${name}`;
  const before = (await node(`cat ${file}`)).stdout.trim();
  await node(`echo ${value} > ${file}`);
  t.teardown(() => node(`echo ${before} > ${file}`));
}

test.serial('weight 0: no new connections, an established one keeps working, /proc/net/ip_vs counts it; with every weight 0 new connections are refused', async (t) => {
  const vip = '10.96.1.1';
  await program(t, vip, servers(vip, 80, answerPort) + servers(vip, 90, heldPort));
  const held = await client!.open(vip, 90);
  t.teardown(() => held.close());
  t.regex(held.backend, /^pod-[123]$/);
  await node('ipvsadm -R', weightLine(vip, 80, answerPort, held.backend, 0) + weightLine(vip, 90, heldPort, held.backend, 0));
  const r = await connectManyInUml(uml, sandbox.client, vip, 80, { count: 30, concurrency: 1, timeoutMs: 3000 });
  t.is(r.answered, 30);
  t.false(held.backend in r.byBackend);
  t.deepEqual(Object.values(r.byBackend), [15, 15]);
  t.deepEqual(await held.ask('still there'), { kind: 'ok', answer: `${held.backend}:still there` });
  const ip = `10.180.0.${10 + Number(held.backend.slice(4))}`;
  const entry = async (): Promise<{ weight: number; active: number; inactive: number } | undefined> => {
    const proc = parseProcIpVs((await node('cat /proc/net/ip_vs')).stdout);
    return proc.find((s) => s.service.address === vip && s.service.port === 90)?.servers.find((s) => s.address === ip);
  };
  t.like(await entry(), { weight: 0, active: 1, inactive: 0 });
  await held.close();
  // A connection closed with FIN stays an inactive one (for the tcpfin timeout, 120 s by default).
  t.like(await entry(), { weight: 0, active: 0, inactive: 1 });
  await node('ipvsadm -R', ['pod-1', 'pod-2', 'pod-3'].map((p) => weightLine(vip, 80, answerPort, p, 0)).join(''));
  const none = await connectManyInUml(uml, sandbox.client, vip, 80, { count: 5, concurrency: 1, timeoutMs: 3000 });
  t.is(none.refused, 5, JSON.stringify(none));
});

test.serial('a deleted real server: its established connection hangs with expire_nodest_conn=0, is reset at the next packet with 1', async (t) => {
  const vip = '10.96.2.1';
  await program(t, vip, servers(vip, 90, heldPort));
  const first = await client!.open(vip, 90, { timeoutMs: 2000 });
  t.teardown(() => first.close());
  await node('ipvsadm -R', `-d -t ${vip}:90 -r 10.180.0.${10 + Number(first.backend.slice(4))}:${heldPort}\n`);
  t.deepEqual(await first.ask('hello'), { kind: 'TIMEOUT', answer: '' });
  await sysctl(t, 'expire_nodest_conn', 1);
  const second = await client!.open(vip, 90, { timeoutMs: 2000 });
  t.teardown(() => second.close());
  await node('ipvsadm -R', `-d -t ${vip}:90 -r 10.180.0.${10 + Number(second.backend.slice(4))}:${heldPort}\n`);
  const started = Date.now();
  const answer = await second.ask('hello');
  t.is(answer.kind, 'ECONNRESET', JSON.stringify(answer));
  t.log(`reset after ${Date.now() - started} ms`);
});

test.serial('conn_reuse_mode: a client port reused towards a weight-0 server is rescheduled with 1 (default), sent back to it with 0', async (t) => {
  const vip = '10.96.3.1';
  await program(t, vip, servers(vip, 80, answerPort));
  const once = (localPort: number) => client!.once(vip, 80, { localPort, timeoutMs: 3000 });
  const a = await once(42001);
  t.is(a.kind, 'ok');
  await node('ipvsadm -R', weightLine(vip, 80, answerPort, a.answer, 0));
  const again = await once(42001);
  t.is(again.kind, 'ok');
  t.not(again.answer, a.answer, 'conn_reuse_mode=1 reschedules a reused port away from the weight-0 server');
  await node('ipvsadm -R', weightLine(vip, 80, answerPort, a.answer, 1));
  await sysctl(t, 'conn_reuse_mode', 0);
  const b = await once(42002);
  await node('ipvsadm -R', weightLine(vip, 80, answerPort, b.answer, 0));
  const back = await once(42002);
  t.deepEqual(back, b, 'conn_reuse_mode=0 sends the reused port to its old (weight-0) server');
});

test.serial('persistence: with expire_quiescent_template=0 a client keeps going to its weight-0 server; with 1 it moves', async (t) => {
  const vip = '10.96.4.1';
  await program(t, vip, servers(vip, 80, answerPort, ' -p 300'));
  const once = () => client!.once(vip, 80, { timeoutMs: 3000 });
  const first = await once();
  t.is((await once()).answer, first.answer, 'persistence keeps the client on one server');
  await node('ipvsadm -R', weightLine(vip, 80, answerPort, first.answer, 0));
  t.is((await once()).answer, first.answer, 'the template still sends new connections to the weight-0 server');
  await sysctl(t, 'expire_quiescent_template', 1);
  const moved = await once();
  t.is(moved.kind, 'ok');
  t.not(moved.answer, first.answer);
});
