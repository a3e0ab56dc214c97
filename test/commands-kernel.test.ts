// dump --live, diff and --cleanup against the real kernel, inside a network
// namespace this test creates and removes.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { netnsExec, hostExec } from '../lib/exec.ts';
import { modeOf } from '../modes/registry.ts';
import { cleanupCommand } from '../proxy/commands/cleanup.ts';
import { diffCommand } from '../proxy/commands/diff.ts';
import { dumpCommand } from '../proxy/commands/dump.ts';
import { loadConfig } from '../proxy/config.ts';
import { loadSource } from '../proxy/load-source.ts';
import { silentLogger } from '../lib/log.ts';
import { modeOptions } from '../proxy/mode-options.ts';
import { requireKernelPrerequisites } from './helpers/netns.ts';
import { syncBackend } from '../modes/sync.ts';

const fixture = fileURLToPath(new URL('./fixtures/proxy/cluster.yaml', import.meta.url));
const log = silentLogger();
const common = ['--source-file', fixture, '--hostname-override', 'node-a', '--cluster-cidr', '10.180.0.0/16,fd00:10:180::/48'];

async function withNamespace(t: import('ava').ExecutionContext): Promise<string> {
  requireKernelPrerequisites();
  const ns = `kproxy-cmdtest-${process.pid}-${randomBytes(3).toString('hex')}`;
  await hostExec('ip', ['netns', 'add', ns]);
  t.teardown(() => hostExec('ip', ['netns', 'del', ns]).then(() => undefined));
  return ns;
}

async function capture(run: (out: (s: string) => Promise<void>) => Promise<number>): Promise<{ code: number; text: string }> {
  let text = '';
  const code = await run(async (s) => { text += s; });
  return { code, text };
}

async function syncFixture(mode: string, ns: string): Promise<void> {
  const config = loadConfig(['--proxy-mode', mode, ...common]);
  const loaded = await loadSource(config, log, { watch: false, checkTools: true });
  const backend = modeOf(config.mode).create(modeOptions(config, loaded.families, loaded.nodeIPs, netnsExec(ns), log), log);
  const snap = loaded.tracker.snapshot();
  const r = await syncBackend(backend, snap.state, snap.changes);
  if (!r.ok) throw r.error;
}

const tamper: Record<string, { args: [string, string[]]; removed: RegExp }> = {
  iptables: { args: ['iptables', ['-w', '-t', 'nat', '-D', 'KUBE-SERVICES', '-d', '172.30.0.41/32', '-p', 'tcp', '-m', 'comment', '--comment', 'default/web:http cluster IP', '-m', 'tcp', '--dport', '80', '-j', 'KUBE-SVC-CDGGSHYLG3RE2FKL']], removed: /^-.*172\.30\.0\.41.*KUBE-SVC-CDGGSHYLG3RE2FKL/m },
  nftables: { args: ['nft', ['delete', 'element', 'ip', 'kproxy', 'service-ips', '{', '172.30.0.41', '.', 'tcp', '.', '80', '}']], removed: /^-.*172\.30\.0\.41 \. tcp \. 80/m },
};

for (const mode of ['iptables', 'nftables']) {
  test.serial(`${mode}: diff is 1 before a sync, 0 after it, 1 with the removed rule after tampering; dump --live shows the kernel`, async (t) => {
    const ns = await withNamespace(t);
    const exec = netnsExec(ns);
    const diffConfig = loadConfig(['diff', '--proxy-mode', mode, ...common]);

    const before = await capture((out) => diffCommand(diffConfig, log, out, exec));
    t.is(before.code, 1);
    t.regex(before.text, /^--- desired/m);
    t.regex(before.text, /^-.*172\.30\.0\.41/m, 'desired lines are missing from the empty kernel');

    await syncFixture(mode, ns);
    const after = await capture((out) => diffCommand(diffConfig, log, out, exec));
    t.is(after.code, 0, after.text);
    t.regex(after.text, /kernel rules match the desired/);

    const live = await capture((out) => dumpCommand(loadConfig(['dump', '--live', '--proxy-mode', mode, '--cluster-cidr', '10.180.0.0/16,fd00:10:180::/48']), log, out, exec));
    t.is(live.code, 0);
    t.regex(live.text, /172\.30\.0\.41/);

    const [tool, args] = tamper[mode].args;
    await exec(tool, args);
    const drifted = await capture((out) => diffCommand(diffConfig, log, out, exec));
    t.is(drifted.code, 1);
    t.regex(drifted.text, tamper[mode].removed);
    t.is(drifted.text.split('\n').filter((l) => /^[-+]/.test(l) && !/^(---|\+\+\+) /.test(l)).length, 1, drifted.text);
  });
}

test.serial('--cleanup removes the rules of every mode, and leaves others alone', async (t) => {
  const ns = await withNamespace(t);
  const exec = netnsExec(ns);
  await syncFixture('iptables', ns);
  await syncFixture('nftables', ns);
  await exec('iptables', ['-w', '-t', 'filter', '-N', 'SOMEONE-ELSE']);
  await exec('nft', ['add', 'table', 'inet', 'someone-else']);
  const code = await cleanupCommand(loadConfig(['--cleanup']), log, exec);
  t.is(code, 0);
  const save = (await exec('iptables-save', [])).stdout + (await exec('ip6tables-save', [])).stdout;
  t.false(/KUBE-/.test(save), save);
  t.regex(save, /:SOMEONE-ELSE/);
  const tables = (await exec('nft', ['list', 'tables'])).stdout;
  t.false(/kproxy/.test(tables), tables);
  t.regex(tables, /table inet someone-else/);
});
