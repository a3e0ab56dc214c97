// The Kubernetes client library loads without its generated API classes and
// models (proxy/source/client-library.ts), as kproxy's own commands load it.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ObjectSerializer } from '../proxy/source/client-slim.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The library's modules a fresh process loads for `entries`, after proxy/cli.ts (as bin/kproxy.js does). */
function libraryModules(entries: string[]): string[] {
  const script = `
    import { registerHooks } from 'node:module';
    const seen = [];
    registerHooks({ load(url, context, next) { seen.push(url); return next(url, context); } });
    await import(${JSON.stringify(`${root}proxy/cli.ts`)});
    for (const m of ${JSON.stringify(entries.map((e) => root + e))}) await import(m);
    console.log(JSON.stringify(seen.filter((u) => u.includes('/@kubernetes/client-node/'))));`;
  // Without ava's --import of the hook: only what proxy/cli.ts does.
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  if (r.status !== 0) throw new Error(`loading ${entries.join(', ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

for (const entries of [['proxy/main.ts'], ['dns-cache/kube-zone.ts']]) {
  test(`${entries.join(', ')} loads the client library without its generated API classes and models`, (t) => {
    const loaded = libraryModules(entries);
    const generated = loaded.filter((u) => /\/dist\/gen\/(apis|types|models)\//.test(u) || u.endsWith('/dist/gen/index.js') || u.endsWith('/dist/index.js'));
    t.deepEqual(generated, [], 'generated code loaded');
    // What it does load: the kubeconfig, list/watch and HTTP modules.
    for (const m of ['dist/config.js', 'dist/cache.js', 'dist/watch.js', 'dist/gen/http/http.js']) {
      t.true(loaded.some((u) => u.endsWith(m)), `${m} not loaded`);
    }
  });
}

test('the slim serializer passes selector strings through and refuses anything that would need a model', (t) => {
  t.is(ObjectSerializer.serialize('metadata.name=node-1', 'string'), 'metadata.name=node-1');
  t.throws(() => ObjectSerializer.serialize({ metadata: {} }, 'V1Service'), { message: /without its models.*V1Service/ });
});
