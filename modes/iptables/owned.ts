// Which chains and rules are kproxy's, and kproxy's share of an
// iptables-save dump (for `dump --live`, diff, cleanup and tests).
import { fixedChains } from './layout.ts';
import { serviceChainPrefixes } from './names.ts';
import { tokenize } from './rule.ts';

const fixed = new Set(fixedChains.map((c) => `${c.table} ${c.name}`));

export function isOwnedChain(table: string, chain: string): boolean {
  if (fixed.has(`${table} ${chain}`)) return true;
  return table === 'nat' && serviceChainPrefixes.some((p) => chain.startsWith(p));
}

const builtins = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

export interface SaveTable {
  readonly name: string;
  /** Chain names in dump order. */
  readonly chains: string[];
  /** Rules as "-A CHAIN spec" lines. */
  readonly rules: string[];
}

/** Parses iptables-save output into tables (comments and counters dropped). */
export function parseSave(text: string): SaveTable[] {
  const out: SaveTable[] = [];
  let cur: SaveTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (!line || line.startsWith('#')) continue;
    if (line.startsWith('*')) out.push((cur = { name: line.slice(1), chains: [], rules: [] }));
    else if (!cur) continue;
    else if (line.startsWith(':')) cur.chains.push(line.slice(1).split(' ')[0]);
    else if (line.startsWith('-A ')) cur.rules.push(line.replace(/^\[\d+:\d+\] /, ''));
  }
  return out;
}

function ruleChain(line: string): string {
  return line.split(' ', 3)[1];
}

/** True when a rule in a built-in chain jumps to a chain kproxy owns. */
export function isOwnedJump(table: string, line: string): boolean {
  const chain = ruleChain(line);
  if (!builtins.has(chain)) return false;
  const words = tokenize(line);
  const j = words.indexOf('-j');
  return j > 0 && isOwnedChain(table, words[j + 1] ?? '');
}

/** kproxy's part of an iptables-save dump, in iptables-save form, chains sorted. */
export function ownedView(saveText: string): string {
  const out: string[] = [];
  const tables = parseSave(saveText).sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const t of tables) {
    const chains = t.chains.filter((c) => isOwnedChain(t.name, c)).sort();
    const keep = new Set(chains);
    const rules = t.rules.filter((r) => keep.has(ruleChain(r)) || isOwnedJump(t.name, r));
    if (chains.length === 0 && rules.length === 0) continue;
    out.push(`*${t.name}`);
    for (const c of chains) out.push(`:${c} - [0:0]`);
    // Keep each chain's rule order; group by chain as iptables-save does.
    const byChain = new Map<string, string[]>();
    for (const r of rules) {
      const c = ruleChain(r);
      let l = byChain.get(c);
      if (!l) byChain.set(c, (l = []));
      l.push(r);
    }
    for (const c of [...byChain.keys()].sort()) for (const r of byChain.get(c)!) out.push(r);
    out.push('COMMIT');
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

