// The user-mode-linux harness itself: one guest boots for this file and
// serves every test; commands, exit codes, large inputs and outputs,
// long-running processes and namespaces inside it work, and the modules the
// IPVS mode needs are loaded.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { kproxyBin, kproxyNodeFlags } from './helpers/kproxy-process.ts';
import { bootUml, guestPath, missingUmlPrerequisites, type Uml } from './helpers/uml.ts';

let uml: Uml;

test.before(async (t) => {
  uml = await bootUml();
  t.log(`boot ${uml.bootMs} ms, modules ${uml.modulesMs} ms, kernel ${uml.kernelVersion}`);
});
test.after.always(async () => {
  await uml?.halt();
});

test('a command runs inside the guest, not on the host', async (t) => {
  const r = await uml.exec(['uname', '-r']);
  t.is(r.stdout.trim(), uml.kernelVersion);
  t.regex(uml.kernelVersion, /^\d+\.\d+\.\d+/);
  t.not(uml.kernelVersion, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
  // The guest's /tmp is its own tmpfs.
  t.is((await uml.exec(['stat', '-f', '-c', '%T', '/tmp'])).stdout.trim(), 'tmpfs');
});

test('exit status, stderr and timeouts come back; exec rejects naming the command', async (t) => {
  const r = await uml.run(['/bin/sh', '-c', 'echo out; echo err >&2; exit 3']);
  t.like(r, { code: 3, stdout: 'out\n', stderr: 'err\n', timedOut: false });
  await t.throwsAsync(uml.exec(['/bin/sh', '-c', 'echo nope >&2; exit 4']), { message: /sh -c echo nope >&2; exit 4 failed \(exit 4\): nope/ });
  const slow = await uml.run(['sleep', '30'], { timeoutMs: 300 });
  t.true(slow.timedOut);
  t.is(slow.signal, 'SIGKILL');
  await t.throwsAsync(uml.run(['/nonexistent/tool']), { message: /cannot start \/nonexistent\/tool/ });
});

test('large inputs and outputs pass intact (inputs travel through hostfs)', async (t) => {
  const input = Array.from({ length: 10_000 }, (_, i) => `line ${i} ${'x'.repeat(i % 50)}`).join('\n') + '\n';
  const r = await uml.exec(['sh', '-c', 'wc -c; cat /proc/uptime >/dev/null'], { input });
  t.is(Number(r.stdout.trim()), Buffer.byteLength(input));
  const out = await uml.exec(['sh', '-c', 'seq 1 100000']);
  t.is(out.stdout.split('\n').length, 100_001);
  // Many small requests in flight at once stay within the serial line's window.
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => uml.exec(['echo', `n${i}`, 'y'.repeat(200)])));
  t.deepEqual(results.map((x) => x.stdout.split(' ')[0]), Array.from({ length: 20 }, (_, i) => `n${i}`));
});

test('a host file is readable inside at guestPath', async (t) => {
  const file = join(uml.dir, 'shared.txt');
  writeFileSync(file, 'from the host\n');
  t.is((await uml.exec(['cat', guestPath(file)])).stdout, 'from the host\n');
  t.is(guestPath('/tmp/x/y'), '/run/host-tmp/x/y');
  t.is(guestPath('/var/tmp/x'), '/var/tmp/x');
});

test('a long-running process: lines as they come, stdin, kill', async (t) => {
  const p = await uml.spawn(['sh', '-c', 'echo ready; while read l; do echo "got $l"; done; echo bye']);
  t.is(await p.nextLine(), 'ready');
  await p.write('one\ntwo\n');
  t.is(await p.nextLine(), 'got one');
  t.is(await p.nextLine(), 'got two');
  await p.end();
  t.is(await p.nextLine(), 'bye');
  t.deepEqual(await p.exited, { code: 0, signal: null });
  const sleeper = await uml.spawn(['sleep', '600']);
  await sleeper.kill();
  t.is((await sleeper.exited).signal, 'SIGKILL');
  await t.throwsAsync(sleeper.nextLine(), { message: /sleep exited/ });
});

test('namespaces inside the guest, with a server process in one of them', async (t) => {
  const ns = `h${process.pid}`;
  await uml.sh(`ip netns add ${ns}-a && ip netns add ${ns}-b && ip -n ${ns}-a link set lo up && ip -n ${ns}-b link set lo up
ip link add va netns ${ns}-a type veth peer name vb netns ${ns}-b
ip -n ${ns}-a addr add 10.9.0.1/24 dev va && ip -n ${ns}-a link set va up
ip -n ${ns}-b addr add 10.9.0.2/24 dev vb && ip -n ${ns}-b link set vb up`);
  t.teardown(() => uml.run(['sh', '-c', `ip netns del ${ns}-a; ip netns del ${ns}-b`]));
  const server = await uml.spawn(['ip', 'netns', 'exec', `${ns}-a`, guestPath(process.execPath), '-e',
    `require('node:net').createServer((s) => s.end('hello from a\\n')).listen(7000, () => console.log('listening'))`]);
  t.teardown(() => server.kill());
  t.is(await server.nextLine(60_000), 'listening');
  const client = await uml.exec(['ip', 'netns', 'exec', `${ns}-b`, guestPath(process.execPath), '-e',
    `require('node:net').connect(7000, '10.9.0.1').on('data', (d) => process.stdout.write(d))`]);
  t.is(client.stdout, 'hello from a\n');
  // The host has no such namespace.
  t.false(readFileSync('/proc/self/mounts', 'utf8').includes(`${ns}-a`));
});

test('IPVS with every scheduler, dummy links, iptables-legacy and the ipset types are there', async (t) => {
  const schedulers = ['rr', 'wrr', 'lc', 'wlc', 'sh', 'dh', 'sed', 'nq', 'mh'];
  const batch = schedulers.map((s, i) => `-A -t 10.96.1.${i + 1}:80 -s ${s}`).join('\n') + '\n';
  await uml.exec(['ipvsadm', '-R'], { input: batch });
  t.teardown(() => uml.run(['ipvsadm', '-C']));
  const saved = (await uml.exec(['ipvsadm', '-Sn'])).stdout;
  t.deepEqual(saved.trim().split('\n').map((l) => l.split(' -s ')[1]), schedulers);
  await uml.sh('ip link add kpt-dummy0 type dummy && ip addr add 10.96.1.1/32 dev kpt-dummy0 && ip link del kpt-dummy0');
  await uml.sh(`ipset create KPT-SET hash:ip,port family inet
iptables-legacy -t nat -N KPT-TEST
iptables-legacy -t nat -A KPT-TEST -m set --match-set KPT-SET dst,dst -m ipvs --vaddr 10.96.1.1/32 -j MASQUERADE --random-fully
iptables-legacy -t nat -F KPT-TEST && iptables-legacy -t nat -X KPT-TEST && ipset destroy KPT-SET`);
  await uml.exec(['ipset', 'restore'], {
    input: ['hash:ip', 'hash:ip,port', 'hash:ip,port,ip', 'hash:ip,port,net'].map((type, i) => `create KPT-${i} ${type} family inet\ndestroy KPT-${i}`).join('\n') +
      '\ncreate KPT-B bitmap:port range 0-65535\ndestroy KPT-B\n',
  });
  t.is((await uml.exec(['ipset', 'list', '-n'])).stdout, '');
});

test.serial('per-command cost inside the guest (logged, not judged; runs alone)', async (t) => {
  const runs = 10;
  const started = Date.now();
  let inside = 0;
  for (let i = 0; i < runs; i++) inside += (await uml.exec(['true'])).ms;
  const roundTrip = (Date.now() - started) / runs;
  t.log(`run(['true']): ${roundTrip.toFixed(1)} ms per call, ${(inside / runs).toFixed(1)} ms of it the process inside the guest`);
  t.true(roundTrip > 0);
});

test('a missing prerequisite is named with the Debian package to install', (t) => {
  t.is(missingUmlPrerequisites(), undefined);
  const problem = missingUmlPrerequisites([
    { path: '/nonexistent/linux.uml', pkg: 'user-mode-linux', what: 'the UML kernel' },
    { path: '/nonexistent/modprobe', pkg: 'kmod', what: 'modprobe' },
    { path: '/usr/sbin/ip', pkg: 'iproute2', what: 'ip' },
  ]);
  t.is(problem, 'cannot boot the IPVS test kernel: missing the UML kernel (/nonexistent/linux.uml), modprobe (/nonexistent/modprobe); install with: apt-get install -y user-mode-linux kmod');
});

test('halt stops the guest with all its host processes and removes its directory; a guest that does not halt is killed', async (t) => {
  const gone = (pid: number): boolean => {
    try {
      process.kill(-pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH';
    }
  };
  const [clean, stuck] = await Promise.all([bootUml({ memMB: 256 }), bootUml({ memMB: 256 })]);
  let started = Date.now();
  await clean.halt();
  t.log(`halt ${Date.now() - started} ms`);
  t.true(gone(clean.pid));
  t.false(existsSync(clean.dir));
  // Stop the runner: the guest no longer answers and never halts by itself.
  const never = stuck.run(['sh', '-c', 'kill -STOP $PPID']);
  never.catch(() => { /* rejected when the guest is killed */ });
  await new Promise((r) => setTimeout(r, 500));
  started = Date.now();
  await stuck.halt(2000);
  t.true(Date.now() - started >= 1900);
  t.true(gone(stuck.pid));
  t.false(existsSync(stuck.dir));
  await t.throwsAsync(never, { message: /linux.uml exited/ });
  await t.throwsAsync(stuck.run(['true']), { message: /the guest has exited/ });
});

test('the kproxy command runs inside the guest from the host\'s checkout', async (t) => {
  const cluster = fileURLToPath(new URL('../examples/cluster.yaml', import.meta.url));
  const started = Date.now();
  const p = await uml.spawn([guestPath(process.execPath), ...kproxyNodeFlags(), guestPath(kproxyBin), 'dump', '--proxy-mode', 'nftables',
    '--source-file', guestPath(cluster), '--hostname-override', 'node-a']);
  t.regex(await p.nextLine(60_000), /^#|^(add|flush|delete) /);
  t.deepEqual(await p.exited, { code: 0, signal: null });
  t.regex(p.output(), /add table ip kproxy/);
  t.log(`kproxy dump inside the guest: ${Date.now() - started} ms`);
});
