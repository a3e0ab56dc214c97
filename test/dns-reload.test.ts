// Config reload: on file change and on SIGHUP, keeping the cache; a bad
// config is refused with every problem listed and the old one stays.
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestDnsServer, startTestCache, ask } from './helpers/dns-server.ts';

const dir = mkdtempSync(join(tmpdir(), 'kproxy-dns-reload-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await sleep(100);
  }
  return check();
}

test('a changed config file is picked up without dropping the cache; a bad one is refused', async (t) => {
  const a = await TestDnsServer.start({ zone: 'cluster.local', records: { 'kept.default.svc.cluster.local': [{ type: 'A', data: '10.96.5.5', ttl: 60 }] } });
  const b = await TestDnsServer.start({ zone: 'cluster-b.local', records: { 'new.default.svc.cluster-b.local': [{ type: 'A', data: '10.200.5.5', ttl: 60 }] } });
  const cfg = join(dir, 'watch.yaml');
  writeFileSync(cfg, `listen: [127.0.0.1:0]\nzones:\n  - suffix: cluster.local\n    upstreams: [${a.address}]\n`);
  const cache = await startTestCache(['--config', cfg], { watch: true });
  try {
    await cache.ask('kept.default.svc.cluster.local', 'A');
    t.is((await cache.ask('new.default.svc.cluster-b.local', 'A')).packet.rcode, 'REFUSED');
    writeFileSync(cfg, `listen: [127.0.0.1:0]\nzones:\n  - suffix: cluster.local\n    upstreams: [${a.address}]\n  - suffix: cluster-b.local\n    upstreams: [${b.address}]\n`);
    t.true(await eventually(async () => (await cache.ask('new.default.svc.cluster-b.local', 'A')).packet.rcode === 'NOERROR', 5000), 'the new zone was not picked up');
    const kept = await cache.ask('kept.default.svc.cluster.local', 'A');
    t.deepEqual(kept.packet.answers?.map((x) => x.data), ['10.96.5.5']);
    t.is(a.count('kept.default.svc.cluster.local'), 1, 'the cached answer survived the reload');

    writeFileSync(cfg, `listen: [127.0.0.1:0]\nzones:\n  - suffix: cluster.local\n    upstreams: [10.0.0.300]\n    policy: fastest\n    timeout_ms: -5\n`);
    t.true(await eventually(async () => await cache.metric('coredns_reload_failed_total') === 1, 5000), 'the bad config was not refused');
    t.false(await cache.reload());
    t.is(cache.config().zones.length, 2, 'the previous config stays in force');
    t.is((await cache.ask('new.default.svc.cluster-b.local', 'A')).packet.rcode, 'NOERROR');
  } finally {
    await cache.stop();
    await a.stop();
    await b.stop();
  }
});

test('runDnsCache: SIGHUP reloads, SIGTERM stops with exit code 0', async (t) => {
  const a = await TestDnsServer.start({ zone: 'cluster.local', records: { 'sig.default.svc.cluster.local': [{ type: 'A', data: '10.96.6.6', ttl: 60 }] } });
  const cfg = join(dir, 'sig.yaml');
  writeFileSync(cfg, `listen: [127.0.0.1:0]\nhealth: 127.0.0.1:0\nmetrics: 127.0.0.1:0\nzones:\n  - suffix: cluster.local\n    upstreams: [${a.address}]\n`);
  const main = fileURLToPath(new URL('../dns-cache/main.ts', import.meta.url));
  const child = spawn(process.execPath, ['--input-type=module', '-e',
    `import(${JSON.stringify(main)}).then((m) => m.runDnsCache(process.argv.slice(1))).then((c) => process.exit(c))`,
    '--', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    t.true(await eventually(async () => log.includes('dns-cache serving'), 10_000), log);
    const serving = JSON.parse(log.split('\n').find((l) => l.includes('dns-cache serving')) ?? '{}') as { listen: Array<{ host: string; port: number }> };
    const { host, port } = serving.listen[0];
    const r = await ask(host, port, 'sig.default.svc.cluster.local', 'A');
    t.deepEqual(r.packet.answers?.map((x) => x.data), ['10.96.6.6']);
    child.kill('SIGHUP');
    t.true(await eventually(async () => log.includes('config reloaded'), 5000), log);
    child.kill('SIGTERM');
    t.is(await exited, 0);
  } finally {
    child.kill('SIGKILL');
    await a.stop();
  }
});
