// The kproxy command starts Node.js with a small V8 young generation (RSS at
// 10,000 Services depends on it): the flag is on the command line, since V8
// cannot change it after start-up, and the DaemonSets agree on its value.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

const root = (p: string): string => fileURLToPath(new URL(`../${p}`, import.meta.url));
const shebang = readFileSync(root('bin/kproxy.js'), 'utf8').split('\n', 1)[0];

function nodeOptions(manifest: string, container: string): string | undefined {
  for (const d of parseAllDocuments(readFileSync(root(manifest), 'utf8')) as ReturnType<typeof parseAllDocuments> & unknown[]) {
    const o = (d as { toJS(): any }).toJS();
    if (o?.kind !== 'DaemonSet') continue;
    const c = o.spec.template.spec.containers.find((x: { name: string }) => x.name === container);
    return c?.env?.find((e: { name: string }) => e.name === 'NODE_OPTIONS')?.value;
  }
  return undefined;
}

test('bin/kproxy.js starts node with --max-semi-space-size through env -S', (t) => {
  t.regex(shebang, /^#!\/usr\/bin\/env -S node --max-semi-space-size=\d+$/);
});

test('the DaemonSets set the same semi-space size as the command', (t) => {
  const flag = /--max-semi-space-size=\d+/.exec(shebang)?.[0];
  t.truthy(flag);
  t.is(nodeOptions('manifests/kproxy.yaml', 'kproxy'), flag);
  t.is(nodeOptions('manifests/dns-cache.yaml', 'dns-cache'), flag);
});

test('the shebang line runs: env -S splits it and node takes the flag', (t) => {
  // Run the interpreter line itself (with the Node.js on PATH, as npx and the
  // image do) and read the flags node was given back from inside.
  const words = shebang.slice(2).split(' ');
  const out = execFileSync(words[0], [...words.slice(1), '-p', 'process.execArgv[0]'], { encoding: 'utf8' });
  t.is(out.trim(), words[3]);
});
