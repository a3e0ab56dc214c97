// Typed iptables rules for the few chains the IPVS mode keeps (masquerade,
// hairpin, the source-range firewall, the verdicts for ports without
// endpoints, the marks of in-cluster traffic). Each rule renders to the one
// line `iptables-save` prints for it (checked against iptables-legacy in
// user-mode-linux) and parses back; nothing else parses. The rules carry
// only constants and set names: no Service's text ever reaches them.
import { cidrFamily } from '../../lib/net.ts';
import { checkSetName } from './ipset.ts';
import { IpvsSyntaxError, show } from './checks.ts';

export type Table = 'nat' | 'filter' | 'mangle';
export type L4 = 'tcp' | 'udp' | 'sctp';
export type SetFlags = 'src' | 'dst' | 'dst,dst' | 'dst,dst,src';

export type IptMatch =
  | { readonly kind: 'comment'; readonly text: string }
  | { readonly kind: 'set'; readonly name: string; readonly flags: SetFlags; readonly negate?: boolean }
  | { readonly kind: 'addrtype'; readonly src?: 'LOCAL'; readonly dst?: 'LOCAL'; readonly negate?: boolean }
  | { readonly kind: 'conntrack'; readonly states: 'NEW' | 'RELATED,ESTABLISHED' }
  | { readonly kind: 'mark'; readonly mark: string; readonly negate?: boolean }
  | { readonly kind: 'ipvs' };

export type IptTarget =
  | { readonly kind: 'jump'; readonly chain: string }
  | { readonly kind: 'ACCEPT' | 'DROP' | 'RETURN' }
  | { readonly kind: 'REJECT'; readonly with: 'tcp-reset' | 'icmp-port-unreachable' | 'icmp6-port-unreachable' }
  | { readonly kind: 'MARK'; readonly xmark: string }
  | { readonly kind: 'MASQUERADE'; readonly randomFully: boolean }
  | { readonly kind: 'SET'; readonly set: string; readonly flags: 'dst,dst' };

export interface IptRule {
  readonly src?: { readonly cidr: string; readonly negate?: boolean };
  readonly proto?: L4;
  readonly matches: readonly IptMatch[];
  readonly target: IptTarget;
}

const chainPattern = /^[A-Z][A-Z0-9-]{0,28}$/;
const markPattern = /^0x[0-9a-f]{1,8}\/0x[0-9a-f]{1,8}$/;
const commentPattern = /^[A-Za-z0-9 ,.()-]{1,200}$/;
const setFlags: readonly string[] = ['src', 'dst', 'dst,dst', 'dst,dst,src'];

function checkChain(name: string): void {
  if (!chainPattern.test(name)) throw new IpvsSyntaxError(`invalid chain name ${show(name)}`);
}

export function validateRule(r: IptRule): void {
  if (r.src && cidrFamily(r.src.cidr) === 0) throw new IpvsSyntaxError(`invalid source ${show(r.src.cidr)}`);
  if (r.proto !== undefined && !['tcp', 'udp', 'sctp'].includes(r.proto)) throw new IpvsSyntaxError(`invalid protocol ${show(r.proto)}`);
  for (const m of r.matches) {
    switch (m.kind) {
      case 'comment':
        if (!commentPattern.test(m.text)) throw new IpvsSyntaxError(`invalid comment ${show(m.text)}`);
        break;
      case 'set':
        checkSetName(m.name);
        if (!setFlags.includes(m.flags)) throw new IpvsSyntaxError(`invalid set flags ${show(m.flags)}`);
        break;
      case 'mark':
        if (!markPattern.test(m.mark)) throw new IpvsSyntaxError(`invalid mark ${show(m.mark)}`);
        break;
      case 'addrtype':
        if ((m.src === undefined) === (m.dst === undefined)) throw new IpvsSyntaxError('addrtype takes one of --src-type, --dst-type');
        break;
      default:
        break;
    }
  }
  const t = r.target;
  if (t.kind === 'jump') checkChain(t.chain);
  if (t.kind === 'MARK' && !markPattern.test(t.xmark)) throw new IpvsSyntaxError(`invalid mark ${show(t.xmark)}`);
  if (t.kind === 'SET') checkSetName(t.set);
}

function renderMatch(m: IptMatch): string {
  switch (m.kind) {
    case 'comment':
      return `-m comment --comment ${m.text.includes(' ') ? `"${m.text}"` : m.text}`;
    case 'set':
      return `-m set ${m.negate ? '! ' : ''}--match-set ${m.name} ${m.flags}`;
    case 'addrtype':
      return `-m addrtype ${m.negate ? '! ' : ''}${m.src ? `--src-type ${m.src}` : `--dst-type ${m.dst}`}`;
    case 'conntrack':
      return `-m conntrack --ctstate ${m.states}`;
    case 'mark':
      return `-m mark ${m.negate ? '! ' : ''}--mark ${m.mark}`;
    case 'ipvs':
      return '-m ipvs --vdir ORIGINAL --vmethod MASQ';
  }
}

function renderTarget(t: IptTarget): string {
  switch (t.kind) {
    case 'jump':
      return `-j ${t.chain}`;
    case 'REJECT':
      return `-j REJECT --reject-with ${t.with}`;
    case 'MARK':
      return `-j MARK --set-xmark ${t.xmark}`;
    case 'MASQUERADE':
      return t.randomFully ? '-j MASQUERADE --random-fully' : '-j MASQUERADE';
    case 'SET':
      return `-j SET --map-set ${t.set} ${t.flags} --map-mark`;
    default:
      return `-j ${t.kind}`;
  }
}

/** The rule as iptables-save prints it after `-A CHAIN`. */
export function renderRule(r: IptRule): string {
  validateRule(r);
  const parts: string[] = [];
  if (r.src) parts.push(`${r.src.negate ? '! ' : ''}-s ${r.src.cidr}`);
  if (r.proto) parts.push(`-p ${r.proto}`);
  for (const m of r.matches) parts.push(renderMatch(m));
  parts.push(renderTarget(r.target));
  return parts.join(' ');
}

/** Splits a line into words; a double-quoted comment is one word. */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line))) out.push(m[1] ?? m[2]);
  return out;
}

/** Parses a rule as renderRule() writes it (the words after `-A CHAIN`); throws on anything else. */
export function parseRule(text: string): IptRule {
  const w = words(text);
  let i = 0;
  const take = (): string => {
    if (i >= w.length) throw new IpvsSyntaxError(`rule ends early: ${show(text)}`);
    return w[i++];
  };
  const expect = (word: string): void => {
    const got = take();
    if (got !== word) throw new IpvsSyntaxError(`expected ${word}, got ${show(got)} in ${show(text)}`);
  };
  let src: IptRule['src'];
  let proto: L4 | undefined;
  const matches: IptMatch[] = [];
  let target: IptTarget | undefined;
  while (i < w.length) {
    let negate = false;
    if (w[i] === '!' && (w[i + 1] === '-s')) {
      negate = true;
      i++;
    }
    const word = take();
    if (word === '-s') {
      src = { cidr: take(), ...(negate ? { negate } : {}) };
    } else if (word === '-p') {
      proto = take() as L4;
    } else if (word === '-m') {
      const mod = take();
      const neg = (): boolean => (w[i] === '!' ? (i++, true) : false);
      if (mod === 'comment') {
        expect('--comment');
        matches.push({ kind: 'comment', text: take() });
      } else if (mod === 'set') {
        const n = neg();
        expect('--match-set');
        matches.push({ kind: 'set', name: take(), flags: take() as SetFlags, ...(n ? { negate: true } : {}) });
      } else if (mod === 'addrtype') {
        const n = neg();
        const opt = take();
        const value = take() as 'LOCAL';
        if (opt === '--src-type') matches.push({ kind: 'addrtype', src: value, ...(n ? { negate: true } : {}) });
        else if (opt === '--dst-type') matches.push({ kind: 'addrtype', dst: value, ...(n ? { negate: true } : {}) });
        else throw new IpvsSyntaxError(`unknown addrtype option ${show(opt)}`);
      } else if (mod === 'conntrack') {
        expect('--ctstate');
        matches.push({ kind: 'conntrack', states: take() as 'NEW' });
      } else if (mod === 'mark') {
        const n = neg();
        expect('--mark');
        matches.push({ kind: 'mark', mark: take(), ...(n ? { negate: true } : {}) });
      } else if (mod === 'ipvs') {
        expect('--vdir');
        expect('ORIGINAL');
        expect('--vmethod');
        expect('MASQ');
        matches.push({ kind: 'ipvs' });
      } else {
        throw new IpvsSyntaxError(`unknown match ${show(mod)} in ${show(text)}`);
      }
    } else if (word === '-j') {
      const t = take();
      if (t === 'REJECT') {
        expect('--reject-with');
        target = { kind: 'REJECT', with: take() as 'tcp-reset' };
      } else if (t === 'MARK') {
        expect('--set-xmark');
        target = { kind: 'MARK', xmark: take() };
      } else if (t === 'MASQUERADE') {
        const rf = w[i] === '--random-fully';
        if (rf) i++;
        target = { kind: 'MASQUERADE', randomFully: rf };
      } else if (t === 'SET') {
        expect('--map-set');
        const set = take();
        const flags = take();
        if (flags !== 'dst,dst') throw new IpvsSyntaxError(`unexpected SET flags ${show(flags)}`);
        expect('--map-mark');
        target = { kind: 'SET', set, flags };
      } else if (t === 'ACCEPT' || t === 'DROP' || t === 'RETURN') {
        target = { kind: t };
      } else {
        target = { kind: 'jump', chain: t };
      }
      if (i < w.length) throw new IpvsSyntaxError(`unexpected ${show(w.slice(i).join(' '))} after the target in ${show(text)}`);
    } else {
      throw new IpvsSyntaxError(`unexpected ${show(word)} in ${show(text)}`);
    }
  }
  if (!target) throw new IpvsSyntaxError(`no target in ${show(text)}`);
  const rule: IptRule = { ...(src ? { src } : {}), ...(proto ? { proto } : {}), matches, target };
  if (renderRule(rule) !== text) throw new IpvsSyntaxError(`${show(text)} is not in canonical form (${show(renderRule(rule))})`);
  return rule;
}

/** The tool of a variant and family, e.g. ip6tables-legacy-restore. */
export function iptablesTool(family: 4 | 6, variant: 'nft' | 'legacy', suffix: '' | '-save' | '-restore'): string {
  return `${family === 4 ? 'iptables' : 'ip6tables'}-${variant}${suffix}`;
}
