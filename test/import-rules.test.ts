// The layout's import rules, checked on every file: each part may import
// only what its room allows (DESIGN.md, "Layout").
//  - A mode's folder is named only by that folder, the registry, and that
//    mode's own tests, helpers and benchmarks (test/**/<mode>-*,
//    test/fixtures/<mode>/, bench/<mode>.ts, bench/<mode>-*): the core, the
//    shared mode plumbing, the DNS cache, the shared tests and helpers reach
//    a mode through modes/registry.ts.
//  - modes/ imports from proxy/ only the model.
//  - dns-cache/ imports nothing from modes/ and from proxy/ only its sources.
//  - lib/ imports nothing of kproxy's but lib/.
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { modes as registeredModes } from '../modes/registry.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const skip = new Set(['node_modules', '.git', 'build']);

function files(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    if (skip.has(name)) continue;
    const rel = dir ? `${dir}/${name}` : name;
    if (statSync(join(root, rel)).isDirectory()) out.push(...files(rel));
    else if (/\.(ts|js)$/.test(name)) out.push(rel);
  }
  return out;
}

/** Every relative import of a file (static, dynamic, re-export), resolved to a path from the repository root. */
function imports(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)(['"])(\.{1,2}\/[^'"]+)\1/gm)) {
    out.push(relative(root, normalize(join(root, dirname(file), m[2]))));
  }
  return out;
}

const all = files('');
// The registered modes' folders; other folders of modes/ (native/: the
// nf_tables event addon) are shared by the modes, like modes/*.ts.
const modeFolders = registeredModes.map((m) => m.name);

/** Whether `file` may name modes/<mode>/. */
function mayName(file: string, mode: string): boolean {
  const base = file.slice(file.lastIndexOf('/') + 1);
  return file.startsWith(`modes/${mode}/`) || file === 'modes/registry.ts' ||
    (file.startsWith('test/') && base.startsWith(`${mode}-`)) || file.startsWith(`test/fixtures/${mode}/`) ||
    file === `bench/${mode}.ts` || file.startsWith(`bench/${mode}-`);
}

test('the scan finds the layout it checks', (t) => {
  t.true(modeFolders.includes('iptables') && modeFolders.includes('nftables'), modeFolders.join(', '));
  const dirs = readdirSync(join(root, 'modes')).filter((n) => statSync(join(root, 'modes', n)).isDirectory());
  for (const m of modeFolders) t.true(dirs.includes(m), `modes/${m}/ holds the registered mode ${m}`);
  t.true(all.includes('proxy/main.ts') && all.includes('dns-cache/main.ts') && all.includes('lib/log.ts'));
  t.true(imports('proxy/main.ts').includes('modes/registry.ts'), 'imports are resolved from the repository root');
});

test('a mode\'s folder is named only by itself, the registry and its own tests', (t) => {
  const offenders: string[] = [];
  for (const file of all) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const mode of modeFolders) {
      if (mayName(file, mode)) continue;
      const named = imports(file).some((p) => p.startsWith(`modes/${mode}/`)) || text.includes(`modes/${mode}/`);
      if (named) offenders.push(`${file} names modes/${mode}/`);
    }
  }
  t.deepEqual(offenders, []);
});

test('modes/ imports from proxy/ only the model', (t) => {
  const offenders = all.filter((f) => f.startsWith('modes/'))
    .flatMap((f) => imports(f).filter((p) => p.startsWith('proxy/') && p !== 'proxy/model.ts').map((p) => `${f} → ${p}`));
  t.deepEqual(offenders, []);
});

test('dns-cache/ imports nothing from modes/ and from proxy/ only its sources', (t) => {
  const offenders = all.filter((f) => f.startsWith('dns-cache/'))
    .flatMap((f) => imports(f).filter((p) => p.startsWith('modes/') || (p.startsWith('proxy/') && !p.startsWith('proxy/source/'))).map((p) => `${f} → ${p}`));
  t.deepEqual(offenders, []);
});

test('lib/ imports only lib/', (t) => {
  const offenders = all.filter((f) => f.startsWith('lib/'))
    .flatMap((f) => imports(f).filter((p) => !p.startsWith('lib/')).map((p) => `${f} → ${p}`));
  t.deepEqual(offenders, []);
});
