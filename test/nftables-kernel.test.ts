// The nftables backend against the real kernel, inside a network namespace
// this test creates and removes: the full transaction loads with the real
// nft, incremental ones apply on top, the kernel's listing agrees with the
// fake kernel's, and cleanup removes kproxy's tables only.
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { NftablesBackend, nftTool } from '../modes/nftables/backend.ts';
import { normalizeListing } from '../modes/nftables/listing.ts';
import { netnsExec } from '../lib/exec.ts';
import { fullChanges, type NodeState } from '../proxy/model.ts';
import { silentLogger } from '../lib/log.ts';
import { ep, nodeState, svc, withPort } from './helpers/state.ts';
import { allServices, byName, defaultOptions as options } from './fixtures/services.ts';
import { changesBetween, replace } from './fixtures/nftables/states.ts';
import { loaded } from './fixtures/nftables/golden.ts';
import { createNetns, deleteNetns, missingPrerequisite, nsRun } from './fixtures/nftables/netns.ts';
import { syncBackend } from '../modes/sync.ts';

const execFileP = promisify(execFile);

test.serial.before((t) => {
  const missing = missingPrerequisite();
  if (missing) t.fail(missing);
});

async function kernelView(ns: string): Promise<string> {
  return normalizeListing((await nsRun(ns, nftTool, ['list', 'table', 'ip', 'kproxy'])) + (await nsRun(ns, nftTool, ['list', 'table', 'ip6', 'kproxy'])));
}

function fakeView(state: NodeState): string {
  const k = loaded(state, options);
  return normalizeListing(k.dump('ip', 'kproxy') + k.dump('ip6', 'kproxy'));
}

test.serial('full and incremental transactions load into the real kernel and match the fake kernel', async (t) => {
  const ns = await createNetns('kpx-nft');
  t.teardown(() => deleteNetns(ns));
  const backend = new NftablesBackend({ ...options, exec: netnsExec(ns) }, silentLogger());

  let state = nodeState(allServices);
  const full = await syncBackend(backend, state, fullChanges(state));
  t.true(full.ok, full.error?.message);
  t.is(await kernelView(ns), fakeView(state), 'after the full sync');
  t.deepEqual(await backend.checkDrift(), { damage: [] });

  const web = byName('shop/web:http');
  const sticky = byName('shop/sticky');
  const steps: [string, NodeState][] = [];
  const moved = [web.clusterEndpoints[0], ep('10.244.3.99', 8080)];
  steps.push(['endpoints change', replace(state, withPort(web, { clusterEndpoints: moved, allReachableEndpoints: moved }))]);
  steps.push(['affinity timeout and endpoints change', replace(steps[0][1], { ...sticky, affinityTimeoutSeconds: 60, clusterEndpoints: sticky.clusterEndpoints.slice(1), allReachableEndpoints: sticky.clusterEndpoints.slice(1) })]);
  steps.push(['a Service loses its endpoints, another appears', replace(steps[1][1],
    svc({ name: 'shop/np', clusterIP: '10.96.0.11', port: 80, nodePort: 30080 }),
    svc({ name: 'shop/late', clusterIP: 'fd00:96::99', port: 443, externalPolicyLocal: true, nodePort: 30999, clusterEndpoints: [ep('fd00:244:5::1', 8443)], localEndpoints: [] }))]);
  for (const [what, next] of steps) {
    const r = await syncBackend(backend, next, changesBetween(state, next));
    t.true(r.ok, `${what}: ${r.error?.message}`);
    t.false(r.full);
    t.true(r.size < 40, `${what}: ${r.size} lines`);
    t.is(await kernelView(ns), fakeView(next), what);
    state = next;
  }

  // A periodic full sync on top of the loaded table (flush path), then a new
  // process adopting the table (delete-and-rebuild path).
  // (with an affinity timeout changed since the last sync: the set is re-created)
  const stickyNow = state.services.get(sticky.key)!;
  state = replace(state, { ...stickyNow, affinityTimeoutSeconds: 90 });
  const again = await syncBackend(backend, state, fullChanges(state));
  t.true(again.ok, again.error?.message);
  t.is(await kernelView(ns), fakeView(state), 'after a periodic full sync');
  const fresh = new NftablesBackend({ ...options, exec: netnsExec(ns) }, silentLogger());
  const adopted = await syncBackend(fresh, state, fullChanges(state));
  t.true(adopted.ok, adopted.error?.message);
  t.is(await kernelView(ns), fakeView(state), 'after adoption');

  t.deepEqual(await fresh.checkDrift(), { damage: [] }, 'nothing changed behind its back');
  await nsRun(ns, nftTool, ['flush', 'chain', 'ip', 'kproxy', 'nat-prerouting']);
  await nsRun(ns, nftTool, ['delete', 'chain', 'ip', 'kproxy', 'nat-prerouting']);
  t.regex((await fresh.checkDrift()).full ?? '', /nat-prerouting/, 'a deleted base chain is noticed');
});

test.serial('cleanup removes only kproxy tables', async (t) => {
  const ns = await createNetns('kpx-nft');
  t.teardown(() => deleteNetns(ns));
  await nsRun(ns, nftTool, ['add', 'table', 'ip', 'foreign']);
  await nsRun(ns, nftTool, ['add', 'chain', 'ip', 'foreign', 'keep']);
  const backend = new NftablesBackend({ ...options, exec: netnsExec(ns) }, silentLogger());
  await backend.cleanup(); // nothing of kproxy's yet: must not fail
  const state = nodeState(allServices);
  t.true((await syncBackend(backend, state, fullChanges(state))).ok);
  t.regex(await nsRun(ns, nftTool, ['list', 'tables']), /table ip kproxy[\s\S]*table ip6 kproxy/);
  await backend.cleanup();
  t.is(await nsRun(ns, nftTool, ['list', 'tables']), 'table ip foreign\n');
  t.regex(await nsRun(ns, nftTool, ['list', 'table', 'ip', 'foreign']), /chain keep/);
  t.is(await backend.readKernel(), '');
});

// Minimal servers and a client for the traffic check below (plain Node, run inside the namespaces).
const serverScript = `
const net = require('node:net'), dgram = require('node:dgram');
net.createServer((s) => s.end(s.localAddress + '\\n')).listen(8080, '0.0.0.0');
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send('udp:' + m, r.port, r.address));
u.bind(5353, process.argv[1], () => console.log('ready'));
`;
const clientScript = `
const net = require('node:net'), dgram = require('node:dgram');
const get = (host) => new Promise((res) => {
  const t0 = Date.now(); const s = net.connect({ host, port: 80 }); let d = '';
  s.on('data', (b) => (d += b)); s.on('end', () => res(d.trim()));
  s.on('error', (e) => res(e.code + (Date.now() - t0 < 500 ? ' at once' : ' late')));
});
(async () => {
  const out = {};
  for (const [name, host, n] of [['plain', '10.96.0.10', 40], ['sticky', '10.96.0.14', 20], ['none', '10.96.0.19', 2]]) {
    out[name] = {};
    for (let i = 0; i < n; i++) { const r = await get(host); out[name][r] = (out[name][r] || 0) + 1; }
  }
  const u = dgram.createSocket('udp4');
  const t = setTimeout(() => { out.udp = 'timeout'; console.log(JSON.stringify(out)); process.exit(0); }, 2000);
  u.on('message', (m) => { clearTimeout(t); out.udp = String(m); console.log(JSON.stringify(out)); process.exit(0); });
  u.send('hi', 53, '10.96.0.20');
})();
`;

test.serial('real traffic from a forwarded client: spread, affinity, reject at once, UDP', async (t) => {
  const node = await createNetns('kpx-nftn');
  const pods = await createNetns('kpx-nftp');
  const client = await createNetns('kpx-nftc');
  t.teardown(async () => {
    for (const ns of [node, pods, client]) await deleteNetns(ns);
  });
  const tag = node.slice(-6);
  const ip = (...args: string[]) => nsRun(node, '/usr/sbin/ip', args);
  const host = (...args: string[]) => execFileP('/usr/sbin/ip', args);
  await host('link', 'add', `kn${tag}`, 'netns', node, 'type', 'veth', 'peer', 'name', `kp${tag}`, 'netns', pods);
  await host('link', 'add', `kc${tag}`, 'netns', node, 'type', 'veth', 'peer', 'name', `cc${tag}`, 'netns', client);
  await ip('addr', 'add', '10.250.0.1/16', 'dev', `kn${tag}`);
  await ip('addr', 'add', '192.168.77.1/24', 'dev', `kc${tag}`);
  await ip('link', 'set', `kn${tag}`, 'up');
  await ip('link', 'set', `kc${tag}`, 'up');
  await ip('route', 'add', '10.96.0.0/12', 'via', '10.250.0.2');
  await nsRun(node, '/usr/sbin/sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  for (const a of ['10.250.0.2/16', '10.250.1.1/32', '10.250.1.2/32']) await nsRun(pods, '/usr/sbin/ip', ['addr', 'add', a, 'dev', `kp${tag}`]);
  await nsRun(pods, '/usr/sbin/ip', ['link', 'set', `kp${tag}`, 'up']);
  await nsRun(pods, '/usr/sbin/ip', ['route', 'add', '192.168.77.0/24', 'via', '10.250.0.1']);
  await nsRun(client, '/usr/sbin/ip', ['addr', 'add', '192.168.77.2/24', 'dev', `cc${tag}`]);
  await nsRun(client, '/usr/sbin/ip', ['link', 'set', `cc${tag}`, 'up']);
  await nsRun(client, '/usr/sbin/ip', ['route', 'add', 'default', 'via', '192.168.77.1']);

  const eps = [ep('10.250.1.1', 8080), ep('10.250.1.2', 8080)];
  const state = nodeState([
    svc({ name: 'a/plain', clusterIP: '10.96.0.10', port: 80, clusterEndpoints: eps }),
    svc({ name: 'a/sticky', clusterIP: '10.96.0.14', port: 80, affinityTimeoutSeconds: 100, clusterEndpoints: eps }),
    svc({ name: 'a/none', clusterIP: '10.96.0.19', port: 80, clusterEndpoints: [] }),
    svc({ name: 'a/udp', clusterIP: '10.96.0.20', port: 53, protocol: 'UDP', clusterEndpoints: [ep('10.250.1.1', 5353)] }),
  ]);
  const backend = new NftablesBackend({ ...options, families: [4], exec: netnsExec(node) }, silentLogger());
  const r = await syncBackend(backend, state, fullChanges(state));
  t.true(r.ok, r.error?.message);

  const server = spawn('/usr/sbin/ip', ['netns', 'exec', pods, process.execPath, '-e', serverScript, '10.250.1.1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => server.kill('SIGKILL'));
  await new Promise((resolve) => server.stdout.once('data', resolve));
  const got = JSON.parse(await nsRun(client, process.execPath, ['-e', clientScript])) as Record<string, Record<string, number> | string>;
  const plain = got.plain as Record<string, number>;
  t.deepEqual(Object.keys(plain).sort(), ['10.250.1.1', '10.250.1.2'], 'both endpoints answer');
  t.true(plain['10.250.1.1'] >= 5 && plain['10.250.1.2'] >= 5, `spread ${JSON.stringify(plain)}`);
  t.is(Object.keys(got.sticky).length, 1, `one endpoint for the sticky client: ${JSON.stringify(got.sticky)}`);
  t.deepEqual(got.none, { 'ECONNREFUSED at once': 2 });
  t.is(got.udp, 'udp:hi');
  t.regex(await nsRun(node, nftTool, ['list', 'sets', 'ip']), /elements = \{ 192\.168\.77\.2 expires/, 'the client is recorded in an affinity set');
});
