// The real iptables-restore / iptables-save / ipset, in a network namespace
// this test creates and removes: the full batch of a few hundred Services
// loads, a partial batch applies on top, the kernel's view of kproxy's
// chains equals the fake kernel's, and cleanup leaves no KUBE-* chain while
// a foreign rule survives. Runs for each variant installed (nft, legacy).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { FakeKernel } from '../modes/iptables/fake-kernel.ts';
import { netnsExec } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import { fullChanges, type Changes, type ServicePortState } from '../proxy/model.ts';
import { ep, nodeState, svc } from './helpers/state.ts';
import { allServices, nodeIP, options } from './fixtures/services.ts';
import { syncBackend } from '../modes/sync.ts';

const ip = '/usr/sbin/ip';
const variants = ['nft', 'legacy'] as const;

function prerequisites(v: string): string | undefined {
  if (process.getuid?.() !== 0) return 'must run as root (it creates network namespaces)';
  for (const tool of [ip, `/usr/sbin/iptables-${v}-restore`, `/usr/sbin/iptables-${v}-save`, '/usr/sbin/ipset']) {
    try {
      accessSync(tool, constants.X_OK);
    } catch {
      return `${tool} is missing: apt-get install -y iptables ipset iproute2`;
    }
  }
  return undefined;
}

function partial(keys: Iterable<string>): Changes {
  return { full: false, services: new Set(keys), staleUdpEndpoints: [], staleUdpServiceIPs: [] };
}

/** iptables-save prints probabilities as the kernel stores them (a 31-bit fraction): compare in that unit. */
function normalise(text: string): string {
  return text.replace(/--probability (\S+)/g, (_, p: string) => `--probability ${Math.round(Number(p) * 2 ** 31)}`);
}

function bulk(n: number, endpoints: number, bump = 0): ServicePortState[] {
  return Array.from({ length: n }, (_, i) => svc({
    name: `bulk/svc${i}:p`, clusterIP: `172.31.${i >> 8}.${i & 255}`, port: 80, nodePort: i % 10 === 0 ? 32000 + i : 0,
    clusterEndpoints: Array.from({ length: endpoints + (i < bump ? 1 : 0) }, (_, j) => ep(`10.181.${i >> 4}.${((i & 15) << 4) + j}`, 8080)),
  }));
}

for (const v of variants) {
  test.serial(`real kernel (${v}): full batch, partial batch, read-back equals the fake, cleanup`, async (t) => {
    const missing = prerequisites(v);
    if (missing) return t.fail(missing);
    const ns = `kpx-ipt-${v}-${randomBytes(3).toString('hex')}`;
    execFileSync(ip, ['netns', 'add', ns]);
    const prev = process.env.KPROXY_IPTABLES_VARIANT;
    process.env.KPROXY_IPTABLES_VARIANT = v;
    try {
      const exec = netnsExec(ns);
      // A rule and a chain kproxy does not own: they must survive everything.
      await exec(`iptables-${v}-restore`, ['--noflush'], '*filter\n:KUBE-FIREWALL - [0:0]\n-A KUBE-FIREWALL -s 198.18.0.1/32 -j DROP\n-A INPUT -s 198.18.0.2/32 -j ACCEPT\nCOMMIT\n');
      const foreign = (await exec(`iptables-${v}-save`, ['-t', 'filter'])).stdout.split('\n').filter((l) => l.includes('198.18.0.'));
      t.is(foreign.length, 2);

      const opts = options({ families: [4, 6] });
      const real = new IptablesBackend({ ...opts, exec }, silentLogger());
      const fake = new FakeKernel([nodeIP]);
      const mirror = new IptablesBackend({ ...opts, exec: fake.exec }, silentLogger());

      // Every Service of the shared table (their names are distinct) plus 400 bulk Services.
      const special = allServices;
      const s1 = nodeState([...special, ...bulk(400, 5)]);
      const r1 = await syncBackend(real, s1, fullChanges(s1));
      if (!r1.ok) return t.fail(String(r1.error));
      t.true(r1.full);
      t.true(r1.size > 3000, `full batch has ${r1.size} lines`);
      t.true((await syncBackend(mirror, s1, fullChanges(s1))).ok);

      // Partial: endpoints change on 3 Services, one Service goes, one comes.
      const changed = bulk(400, 5, 3);
      const gone = changed[399];
      const added = svc({ name: 'bulk/new:p', clusterIP: '172.31.200.1', port: 443, externalIPs: ['192.168.99.200'], clusterEndpoints: [ep('10.181.200.1', 443)] });
      const s2 = nodeState([...special, ...changed.slice(0, 399), added]);
      const keys = [changed[0].key, changed[1].key, changed[2].key, gone.key, added.key];
      const r2 = await syncBackend(real, s2, partial(keys));
      if (!r2.ok) return t.fail(String(r2.error));
      t.false(r2.full);
      t.true(r2.size < 60, `partial batch has ${r2.size} lines`);
      t.true((await syncBackend(mirror, s2, partial(keys))).ok);

      const kernelView = normalise(await real.readKernel());
      t.log(`kproxy view compared: ${kernelView.split("\n").length} lines`);
      t.is(kernelView, normalise(await mirror.readKernel()));
      t.regex(kernelView, /-A KUBE-SERVICES -d 172\.31\.200\.1\/32 /);
      t.regex(kernelView, /^:KUBE-SEP-/m, 'affinity Services keep per-endpoint chains');
      t.deepEqual(await real.checkDrift(), { damage: [] });

      // A second instance (a restart) adopts the same rules: nothing changes.
      const again = new IptablesBackend({ ...opts, exec }, silentLogger());
      t.true((await syncBackend(again, s2, fullChanges(s2))).ok);
      t.is(normalise(await again.readKernel()), kernelView);

      // A restart onto a smaller state: chains the old instance left and the
      // new state does not want (found by listing chain names) are deleted.
      const s3 = nodeState([...special.filter((x) => x.affinityTimeoutSeconds === 0), ...changed.slice(100, 399)]);
      const third = new IptablesBackend({ ...opts, exec }, silentLogger());
      t.true((await syncBackend(third, s3, fullChanges(s3))).ok);
      const fresh = new FakeKernel([nodeIP]);
      t.true((await syncBackend(new IptablesBackend({ ...opts, exec: fresh.exec }, silentLogger()), s3, fullChanges(s3))).ok);
      const shrunk = normalise(await third.readKernel());
      t.notRegex(shrunk, /KUBE-SEP-/);
      t.is(shrunk, normalise(await new IptablesBackend({ ...opts, exec: fresh.exec }, silentLogger()).readKernel()));

      await again.cleanup();
      for (const cmd of [`iptables-${v}-save`, `ip6tables-${v}-save`]) {
        const save = (await exec(cmd, [])).stdout;
        const left = save.split('\n').filter((l) => /KUBE-/.test(l) && !/KUBE-FIREWALL/.test(l));
        t.deepEqual(left, [], `${cmd} after cleanup`);
      }
      const after = (await exec(`iptables-${v}-save`, ['-t', 'filter'])).stdout.split('\n').filter((l) => l.includes('198.18.0.'));
      t.deepEqual(after, foreign, 'the foreign rules are untouched');
      t.is((await exec('ipset', ['list', '-n'])).stdout.trim(), '', 'no ipset left');
    } finally {
      if (prev === undefined) delete process.env.KPROXY_IPTABLES_VARIANT;
      else process.env.KPROXY_IPTABLES_VARIANT = prev;
      execFileSync(ip, ['netns', 'del', ns]);
    }
  });
}
