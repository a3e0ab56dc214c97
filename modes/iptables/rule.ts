// Typed iptables rules. Every rule renders to one line in the canonical
// form iptables-save prints (so what kproxy writes and what the kernel
// reads back compare as text), and that line parses back to the same value.

import { KproxyError } from '../../lib/errors.ts';

export type L4 = 'tcp' | 'udp' | 'sctp';

export interface Addr {
  readonly cidr: string; // always with a prefix length, as iptables-save prints it
  readonly negate?: boolean;
}

export type Match =
  | { readonly kind: 'comment'; readonly text: string }
  | { readonly kind: 'port'; readonly proto: L4; readonly dport?: number }
  | { readonly kind: 'addrtype'; readonly src?: string; readonly dst?: string }
  | { readonly kind: 'statistic'; readonly probability: string }
  | { readonly kind: 'recent'; readonly mode: 'set' | 'rcheck'; readonly name: string; readonly seconds?: number; readonly reap?: boolean; readonly mask: string }
  | { readonly kind: 'mark'; readonly negate: boolean; readonly mark: string }
  | { readonly kind: 'conntrack'; readonly states: string }
  | { readonly kind: 'set'; readonly name: string; readonly flags: string };

export type Target =
  | { readonly kind: 'jump'; readonly chain: string }
  | { readonly kind: 'DNAT'; readonly to: string }
  | { readonly kind: 'MARK'; readonly xmark: string }
  | { readonly kind: 'MASQUERADE'; readonly randomFully: boolean }
  | { readonly kind: 'REJECT'; readonly with: string }
  | { readonly kind: 'ACCEPT' | 'DROP' | 'RETURN' };

export interface Rule {
  readonly src?: Addr;
  readonly dst?: Addr;
  readonly proto?: L4;
  readonly matches: readonly Match[];
  readonly target: Target;
}

export class RuleSyntaxError extends KproxyError {
  constructor(message: string, line: string) {
    super('KPROXY_IPTABLES_SYNTAX', `${message} in rule: ${line}`);
    this.name = 'RuleSyntaxError';
  }
}

const plain = /^[-_0-9A-Za-z]+$/;

/** Escapes " \\ ' for a string iptables-save prints inside double quotes. */
export function escapeQuoted(s: string): string {
  return /["\\']/.test(s) ? s.replace(/["\\']/g, (c) => `\\${c}`) : s;
}

/** Quotes a string as iptables-save does (only when needed, escaping " \\ '). */
export function quote(s: string): string {
  if (plain.test(s)) return s;
  return `"${escapeQuoted(s)}"`;
}

/** Probability as kube-proxy prints it: ten decimals. */
export function probability(p: number): string {
  return p.toFixed(10);
}

function renderAddr(flag: string, a: Addr): string {
  return `${a.negate ? '! ' : ''}${flag} ${a.cidr}`;
}

export function renderMatch(m: Match): string {
  switch (m.kind) {
    case 'comment':
      // Quotes and backslashes are escaped; a line break or other control character can never be.
      if (!/^[\x20-\x7e]{1,255}$/.test(m.text)) throw new RuleSyntaxError('a comment must be 1-255 printable characters', JSON.stringify(m.text));
      return `-m comment --comment ${quote(m.text)}`;
    case 'port':
      return m.dport === undefined ? `-m ${m.proto}` : `-m ${m.proto} --dport ${m.dport}`;
    case 'addrtype':
      return `-m addrtype${m.src ? ` --src-type ${m.src}` : ''}${m.dst ? ` --dst-type ${m.dst}` : ''}`;
    case 'statistic':
      return `-m statistic --mode random --probability ${m.probability}`;
    case 'recent': {
      const mode = m.mode === 'set' ? '--set' : '--rcheck';
      const secs = m.seconds !== undefined ? ` --seconds ${m.seconds}` : '';
      return `-m recent ${mode}${secs}${m.reap ? ' --reap' : ''} --name ${m.name} --mask ${m.mask} --rsource`;
    }
    case 'mark':
      return `-m mark ${m.negate ? '! ' : ''}--mark ${m.mark}`;
    case 'conntrack':
      return `-m conntrack --ctstate ${m.states}`;
    case 'set':
      return `-m set --match-set ${m.name} ${m.flags}`;
  }
}

export function renderTarget(t: Target): string {
  switch (t.kind) {
    case 'jump':
      return `-j ${t.chain}`;
    case 'DNAT':
      return `-j DNAT --to-destination ${t.to}`;
    case 'MARK':
      return `-j MARK --set-xmark ${t.xmark}`;
    case 'MASQUERADE':
      return t.randomFully ? '-j MASQUERADE --random-fully' : '-j MASQUERADE';
    case 'REJECT':
      return `-j REJECT --reject-with ${t.with}`;
    default:
      return `-j ${t.kind}`;
  }
}

/** The rule spec (everything after `-A CHAIN`). */
export function renderRule(r: Rule): string {
  const parts: string[] = [];
  if (r.src) parts.push(renderAddr('-s', r.src));
  if (r.dst) parts.push(renderAddr('-d', r.dst));
  if (r.proto) parts.push(`-p ${r.proto}`);
  for (const m of r.matches) parts.push(renderMatch(m));
  parts.push(renderTarget(r.target));
  return parts.join(' ');
}

/** Splits a line into words, honouring double quotes and backslash escapes. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === ' ') i++;
    if (i >= line.length) break;
    let word = '';
    if (line[i] === '"') {
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        word += line[i++];
      }
      if (line[i] !== '"') throw new RuleSyntaxError('unterminated quote', line);
      i++;
    } else {
      while (i < line.length && line[i] !== ' ') word += line[i++];
    }
    out.push(word);
  }
  return out;
}

const l4s = new Set(['tcp', 'udp', 'sctp']);
const builtinTargets = new Set(['ACCEPT', 'DROP', 'RETURN']);

/** Parses a rule spec (the words after `-A CHAIN`) back into a Rule. */
export function parseRule(words: readonly string[], line = words.join(' ')): Rule {
  let i = 0;
  const next = (what: string): string => {
    const w = words[i++];
    if (w === undefined) throw new RuleSyntaxError(`missing ${what}`, line);
    return w;
  };
  const expect = (w: string): void => {
    const got = next(w);
    if (got !== w) throw new RuleSyntaxError(`expected ${w}, got ${got}`, line);
  };
  let src: Addr | undefined;
  let dst: Addr | undefined;
  let proto: L4 | undefined;
  const matches: Match[] = [];
  let target: Target | undefined;
  let negate = false;
  while (i < words.length) {
    const w = next('option');
    if (w === '!') {
      negate = true;
      continue;
    }
    if (w === '-s' || w === '-d') {
      const cidr = next('address');
      if (!cidr.includes('/')) throw new RuleSyntaxError(`address ${cidr} lacks a prefix length`, line);
      const a: Addr = negate ? { cidr, negate } : { cidr };
      if (w === '-s') src = a;
      else dst = a;
      negate = false;
      continue;
    }
    if (negate && w !== '-m') throw new RuleSyntaxError(`"!" before ${w} is not supported`, line);
    if (w === '-p') {
      const p = next('protocol');
      if (!l4s.has(p)) throw new RuleSyntaxError(`unknown protocol ${p}`, line);
      proto = p as L4;
    } else if (w === '-m') {
      const mod = next('match');
      if (mod === 'comment') {
        expect('--comment');
        matches.push({ kind: 'comment', text: next('comment') });
      } else if (l4s.has(mod)) {
        if (words[i] === '--dport') {
          i++;
          matches.push({ kind: 'port', proto: mod as L4, dport: Number(next('port')) });
        } else matches.push({ kind: 'port', proto: mod as L4 });
      } else if (mod === 'addrtype') {
        let s: string | undefined;
        let d: string | undefined;
        while (words[i] === '--src-type' || words[i] === '--dst-type') {
          const o = next('addrtype option');
          if (o === '--src-type') s = next('type');
          else d = next('type');
        }
        matches.push({ kind: 'addrtype', ...(s ? { src: s } : {}), ...(d ? { dst: d } : {}) });
      } else if (mod === 'statistic') {
        expect('--mode');
        expect('random');
        expect('--probability');
        matches.push({ kind: 'statistic', probability: next('probability') });
      } else if (mod === 'recent') {
        const modeWord = next('recent mode');
        if (modeWord !== '--set' && modeWord !== '--rcheck') throw new RuleSyntaxError(`unsupported recent mode ${modeWord}`, line);
        let seconds: number | undefined;
        let reap = false;
        if (words[i] === '--seconds') {
          i++;
          seconds = Number(next('seconds'));
        }
        if (words[i] === '--reap') {
          i++;
          reap = true;
        }
        expect('--name');
        const name = next('name');
        expect('--mask');
        const mask = next('mask');
        expect('--rsource');
        matches.push({ kind: 'recent', mode: modeWord === '--set' ? 'set' : 'rcheck', name, mask, ...(seconds !== undefined ? { seconds } : {}), ...(reap ? { reap } : {}) });
      } else if (mod === 'mark') {
        let neg = false;
        if (words[i] === '!') {
          i++;
          neg = true;
        }
        expect('--mark');
        matches.push({ kind: 'mark', negate: neg, mark: next('mark') });
      } else if (mod === 'conntrack') {
        expect('--ctstate');
        matches.push({ kind: 'conntrack', states: next('states') });
      } else if (mod === 'set') {
        expect('--match-set');
        matches.push({ kind: 'set', name: next('set name'), flags: next('set flags') });
      } else {
        throw new RuleSyntaxError(`unsupported match ${mod}`, line);
      }
    } else if (w === '-j') {
      const t = next('target');
      if (t === 'DNAT') {
        expect('--to-destination');
        target = { kind: 'DNAT', to: next('destination') };
      } else if (t === 'MARK') {
        const o = next('MARK option');
        if (o !== '--set-xmark') throw new RuleSyntaxError(`MARK ${o} is not canonical (use --set-xmark)`, line);
        target = { kind: 'MARK', xmark: next('mark') };
      } else if (t === 'MASQUERADE') {
        let randomFully = false;
        if (words[i] === '--random-fully') {
          i++;
          randomFully = true;
        }
        target = { kind: 'MASQUERADE', randomFully };
      } else if (t === 'REJECT') {
        expect('--reject-with');
        target = { kind: 'REJECT', with: next('reject type') };
      } else if (builtinTargets.has(t)) {
        target = { kind: t as 'ACCEPT' | 'DROP' | 'RETURN' };
      } else {
        target = { kind: 'jump', chain: t };
      }
    } else {
      throw new RuleSyntaxError(`unsupported option ${w}`, line);
    }
    negate = false;
  }
  if (!target) throw new RuleSyntaxError('missing -j target', line);
  return { ...(src ? { src } : {}), ...(dst ? { dst } : {}), ...(proto ? { proto } : {}), matches, target };
}
