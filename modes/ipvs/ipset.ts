// Typed `ipset restore` lines for the set types kube-proxy's IPVS mode uses:
// create / add / del / flush / swap / destroy. Each command validates
// itself, renders as one line and parses that line back; parseIpsetSave
// reads what `ipset save` prints (which adds `bucketsize` and `initval` to
// hash sets and drops the /32 or /128 of a single-address net).
import type { LineModel } from './batch.ts';
import { checkHostAddress, checkInteger, checkNetwork, checkPort, IpvsSyntaxError, show } from './checks.ts';

export const setTypes = ['hash:ip', 'hash:ip,port', 'hash:ip,port,ip', 'hash:ip,port,net', 'bitmap:port'] as const;
export type SetType = (typeof setTypes)[number];
export type HashSetType = Exclude<SetType, 'bitmap:port'>;
export type SetFamily = 'inet' | 'inet6';
export type EntryProtocol = 'tcp' | 'udp' | 'sctp';
const entryProtocols: readonly string[] = ['tcp', 'udp', 'sctp'];

export interface HashSetSpec {
  readonly type: HashSetType;
  readonly family: SetFamily;
  readonly hashsize?: number;
  readonly maxelem?: number;
  /** Entries may carry a comment. */
  readonly comment?: boolean;
  /** Entries may carry a packet mark (`skbmark`) for `-j SET --map-set ... --map-mark`. */
  readonly skbinfo?: boolean;
}

export interface BitmapSetSpec {
  readonly type: 'bitmap:port';
  /** Inclusive port range the set can hold. */
  readonly range: readonly [number, number];
  readonly comment?: boolean;
}

export type SetSpec = HashSetSpec | BitmapSetSpec;

/**
 * One member. Its fields say its shape: `ip` (hash:ip), `ip,protocol,port`
 * (hash:ip,port), plus `ip2` (hash:ip,port,ip) or `net` (hash:ip,port,net),
 * or `port` alone (bitmap:port).
 */
export interface SetEntry {
  readonly ip?: string;
  readonly protocol?: EntryProtocol;
  readonly port?: number;
  readonly ip2?: string;
  readonly net?: string;
}

/** A mark an entry gives the packets that match it: mark = (mark & ~mask) ^ value. */
export interface SkbMark {
  readonly value: number;
  readonly mask: number;
}

export type IpsetCommand =
  | { readonly verb: 'create'; readonly set: string; readonly spec: SetSpec }
  | { readonly verb: 'add'; readonly set: string; readonly entry: SetEntry; readonly comment?: string; readonly skbmark?: SkbMark }
  | { readonly verb: 'del'; readonly set: string; readonly entry: SetEntry }
  | { readonly verb: 'flush' | 'destroy'; readonly set: string }
  | { readonly verb: 'swap'; readonly set: string; readonly other: string };

// ipset's limit is 31 characters; kube-proxy's names are letters, digits and '-'.
const setNamePattern = /^[A-Za-z][A-Za-z0-9_.-]{0,30}$/;
const commentPattern = /^[A-Za-z0-9 _./:,=+-]{1,255}$/;

export function checkSetName(name: unknown): void {
  if (typeof name !== 'string' || !setNamePattern.test(name)) {
    throw new IpvsSyntaxError(`invalid set name ${show(name)} (a letter, then up to 30 letters, digits, _ . -)`);
  }
}

/** The set type an entry's shape belongs to. */
export function entryType(entry: SetEntry): SetType {
  if (typeof entry !== 'object' || entry === null) throw new IpvsSyntaxError(`invalid set entry ${show(entry)}`);
  const has = (k: keyof SetEntry): boolean => entry[k] !== undefined;
  const shape = (['ip', 'protocol', 'port', 'ip2', 'net'] as const).filter(has).join(',');
  switch (shape) {
    case 'ip': return 'hash:ip';
    case 'ip,protocol,port': return 'hash:ip,port';
    case 'ip,protocol,port,ip2': return 'hash:ip,port,ip';
    case 'ip,protocol,port,net': return 'hash:ip,port,net';
    case 'port': return 'bitmap:port';
    default: throw new IpvsSyntaxError(`invalid set entry ${show(JSON.stringify(entry))} (no set type holds ${shape || 'nothing'})`);
  }
}

/** The address family of an entry ('inet' when it holds no address). */
export function entryFamily(entry: SetEntry): SetFamily {
  return entry.ip?.includes(':') ? 'inet6' : 'inet';
}

export function checkEntry(entry: SetEntry): SetType {
  const type = entryType(entry);
  if (type === 'bitmap:port') {
    checkInteger('port', entry.port, 0, 65535);
    return type;
  }
  const family = checkHostAddress('entry address', entry.ip);
  if (type === 'hash:ip') return type;
  if (!entryProtocols.includes(entry.protocol as string)) throw new IpvsSyntaxError(`invalid entry protocol ${show(entry.protocol)} (tcp, udp or sctp)`);
  checkPort('entry port', entry.port);
  if (type === 'hash:ip,port,ip' && checkHostAddress('entry second address', entry.ip2) !== family) {
    throw new IpvsSyntaxError(`entry addresses ${entry.ip} and ${entry.ip2} are of different families`);
  }
  if (type === 'hash:ip,port,net' && checkNetwork('entry network', entry.net) !== family) {
    throw new IpvsSyntaxError(`entry address ${entry.ip} and network ${entry.net} are of different families`);
  }
  return type;
}

export function checkSetSpec(spec: SetSpec): void {
  if (typeof spec !== 'object' || spec === null || !setTypes.includes(spec.type)) {
    throw new IpvsSyntaxError(`invalid set type ${show((spec as { type?: unknown } | null)?.type)} (one of ${setTypes.join(', ')})`);
  }
  if (spec.comment !== undefined && typeof spec.comment !== 'boolean') throw new IpvsSyntaxError(`invalid comment flag ${show(spec.comment)}`);
  if (spec.type === 'bitmap:port') {
    if ((spec as { skbinfo?: unknown }).skbinfo !== undefined) throw new IpvsSyntaxError('kproxy keeps marks in hash sets only');
    const range = spec.range;
    if (!Array.isArray(range) || range.length !== 2) throw new IpvsSyntaxError(`bitmap:port needs a range [from, to], got ${show(JSON.stringify(range))}`);
    checkInteger('range start', range[0], 0, 65535);
    checkInteger('range end', range[1], range[0], 65535);
    return;
  }
  if (spec.family !== 'inet' && spec.family !== 'inet6') throw new IpvsSyntaxError(`invalid set family ${show(spec.family)} (inet or inet6)`);
  if (spec.hashsize !== undefined) {
    checkInteger('hashsize', spec.hashsize, 64, 1 << 30);
    if ((spec.hashsize & (spec.hashsize - 1)) !== 0) throw new IpvsSyntaxError(`hashsize ${spec.hashsize} is not a power of two`);
  }
  if (spec.maxelem !== undefined) checkInteger('maxelem', spec.maxelem, 1, 2 ** 32 - 1);
  if (spec.skbinfo !== undefined && typeof spec.skbinfo !== 'boolean') throw new IpvsSyntaxError(`invalid skbinfo flag ${show(spec.skbinfo)}`);
}

export function checkSkbMark(mark: SkbMark): void {
  if (typeof mark !== 'object' || mark === null) throw new IpvsSyntaxError(`invalid skbmark ${show(mark)}`);
  checkInteger('skbmark value', mark.value, 0, 0xffffffff);
  checkInteger('skbmark mask', mark.mask, 1, 0xffffffff);
}

export function validateIpset(cmd: IpsetCommand): void {
  if (typeof cmd !== 'object' || cmd === null) throw new IpvsSyntaxError(`invalid ipset command ${show(cmd)}`);
  checkSetName(cmd.set);
  switch (cmd.verb) {
    case 'create':
      return checkSetSpec(cmd.spec);
    case 'add':
      checkEntry(cmd.entry);
      if (cmd.comment !== undefined && (typeof cmd.comment !== 'string' || !commentPattern.test(cmd.comment))) {
        throw new IpvsSyntaxError(`invalid entry comment ${show(cmd.comment)} (up to 255 letters, digits, spaces and _ . / : , = + -)`);
      }
      if (cmd.skbmark !== undefined) checkSkbMark(cmd.skbmark);
      return;
    case 'del':
      checkEntry(cmd.entry);
      return;
    case 'flush':
    case 'destroy':
      return;
    case 'swap':
      checkSetName(cmd.other);
      if (cmd.other === cmd.set) throw new IpvsSyntaxError(`swap of ${cmd.set} with itself`);
      return;
    default:
      throw new IpvsSyntaxError(`invalid ipset verb ${show((cmd as { verb?: unknown }).verb)}`);
  }
}

export function renderEntry(entry: SetEntry): string {
  if (entry.ip === undefined) return String(entry.port);
  if (entry.protocol === undefined) return entry.ip;
  const base = `${entry.ip},${entry.protocol}:${entry.port}`;
  if (entry.ip2 !== undefined) return `${base},${entry.ip2}`;
  if (entry.net !== undefined) return `${base},${entry.net}`;
  return base;
}

function renderSpec(spec: SetSpec): string {
  if (spec.type === 'bitmap:port') return `bitmap:port range ${spec.range[0]}-${spec.range[1]}${spec.comment ? ' comment' : ''}`;
  let out = `${spec.type} family ${spec.family}`;
  if (spec.hashsize !== undefined) out += ` hashsize ${spec.hashsize}`;
  if (spec.maxelem !== undefined) out += ` maxelem ${spec.maxelem}`;
  if (spec.comment) out += ' comment';
  if (spec.skbinfo) out += ' skbinfo';
  return out;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** As ipset prints it: the mask only when it is not all ones. */
export function renderSkbMark(m: SkbMark): string {
  return m.mask === 0xffffffff ? hex(m.value) : `${hex(m.value)}/${hex(m.mask)}`;
}

function renderValid(cmd: IpsetCommand): string {
  switch (cmd.verb) {
    case 'create':
      return `create ${cmd.set} ${renderSpec(cmd.spec)}`;
    case 'add':
      return `add ${cmd.set} ${renderEntry(cmd.entry)}${cmd.comment !== undefined ? ` comment "${cmd.comment}"` : ''}${cmd.skbmark ? ` skbmark ${renderSkbMark(cmd.skbmark)}` : ''}`;
    case 'del':
      return `del ${cmd.set} ${renderEntry(cmd.entry)}`;
    case 'flush':
    case 'destroy':
      return `${cmd.verb} ${cmd.set}`;
    case 'swap':
      return `swap ${cmd.set} ${cmd.other}`;
  }
}

export function renderIpset(cmd: IpsetCommand): string {
  validateIpset(cmd);
  return renderValid(cmd);
}

function integer(text: string | undefined, what: string): number {
  if (text === undefined || !/^\d{1,10}$/.test(text)) throw new IpvsSyntaxError(`invalid ${what} ${show(text)}`);
  return Number(text);
}

/**
 * Reads an entry. `type` resolves what the text alone cannot: in a
 * hash:ip,port,net set `ipset save` prints a /32 (/128) net as a bare address.
 */
export function parseEntry(text: string, type?: SetType): SetEntry {
  if (/^\d+$/.test(text)) return { port: integer(text, 'port') };
  const parts = text.split(',');
  if (parts.length === 1) return { ip: parts[0] };
  const m = /^([a-z]+):(\d{1,5})$/.exec(parts[1] ?? '');
  if (!m || parts.length > 3) throw new IpvsSyntaxError(`invalid set entry ${show(text)}`);
  const base = { ip: parts[0], protocol: m[1] as EntryProtocol, port: Number(m[2]) };
  if (parts.length === 2) return base;
  const third = parts[2];
  if (third.includes('/')) return { ...base, net: third };
  if (type === 'hash:ip,port,net') return { ...base, net: `${third}/${third.includes(':') ? 128 : 32}` };
  return { ...base, ip2: third };
}

function parseSpec(words: string[], line: string): SetSpec {
  const type = words.shift() as SetType;
  if (!setTypes.includes(type)) throw new IpvsSyntaxError(`invalid set type ${show(type)} in ${show(line)}`);
  const options = new Map<string, string | true>();
  while (words.length > 0) {
    const key = words.shift()!;
    if (key === 'comment' || key === 'skbinfo') {
      options.set(key, true);
    } else if (['family', 'hashsize', 'maxelem', 'range'].includes(key)) {
      const value = words.shift();
      if (value === undefined) throw new IpvsSyntaxError(`${key} without a value in ${show(line)}`);
      options.set(key, value);
    } else {
      throw new IpvsSyntaxError(`unknown set option ${show(key)} in ${show(line)}`);
    }
  }
  const comment = options.has('comment') ? { comment: true } : {};
  const skbinfo = options.has('skbinfo') ? { skbinfo: true } : {};
  if (type === 'bitmap:port') {
    const m = /^(\d{1,5})-(\d{1,5})$/.exec(String(options.get('range') ?? ''));
    if (!m || options.size !== 1 + (options.has('comment') ? 1 : 0)) throw new IpvsSyntaxError(`bitmap:port takes exactly "range FROM-TO" in ${show(line)}`);
    return { type, range: [Number(m[1]), Number(m[2])], ...comment };
  }
  if (options.has('range')) throw new IpvsSyntaxError(`${type} takes no range in ${show(line)}`);
  const family = options.get('family') as SetFamily;
  const hashsize = options.has('hashsize') ? { hashsize: integer(options.get('hashsize') as string, 'hashsize') } : {};
  const maxelem = options.has('maxelem') ? { maxelem: integer(options.get('maxelem') as string, 'maxelem') } : {};
  return { type, family, ...hashsize, ...maxelem, ...comment, ...skbinfo };
}

/** Parses one line as renderIpset() writes it; anything else is refused, naming the line. */
export function parseIpset(line: string, typeOf?: (set: string) => SetType | undefined): IpsetCommand {
  const cmd = parseLine(line, typeOf);
  const again = renderValid(cmd);
  if (again !== line) throw new IpvsSyntaxError(`${show(line)} is not in canonical form (${show(again)})`);
  return cmd;
}

// A valid command from one line, without insisting on render()'s exact text
// (`ipset save` writes a /32 net as a bare address).
function parseLine(line: string, typeOf?: (set: string) => SetType | undefined): IpsetCommand {
  if (typeof line !== 'string' || /[\n\r\0]/.test(line)) throw new IpvsSyntaxError(`invalid ipset line ${show(line)}`);
  let comment: string | undefined;
  let skbmark: SkbMark | undefined;
  let body = line;
  const k = / skbmark 0x([0-9a-f]{1,8})(?:\/0x([0-9a-f]{1,8}))?$/.exec(body);
  if (k) {
    skbmark = { value: parseInt(k[1], 16), mask: k[2] === undefined ? 0xffffffff : parseInt(k[2], 16) };
    body = body.slice(0, k.index);
  }
  const c = / comment "([^"]*)"$/.exec(body);
  if (c) {
    comment = c[1];
    body = body.slice(0, c.index);
  }
  const words = body.split(' ');
  const verb = words.shift();
  const set = words.shift() ?? '';
  let cmd: IpsetCommand;
  switch (verb) {
    case 'create':
      cmd = { verb, set, spec: parseSpec(words, line) };
      words.length = 0;
      break;
    case 'add':
    case 'del': {
      const text = words.shift();
      if (text === undefined) throw new IpvsSyntaxError(`${verb} without an entry: ${show(line)}`);
      checkSetName(set);
      const entry = parseEntry(text, typeOf?.(set));
      cmd = verb === 'add'
        ? { verb, set, entry, ...(comment !== undefined ? { comment } : {}), ...(skbmark !== undefined ? { skbmark } : {}) }
        : { verb, set, entry };
      break;
    }
    case 'flush':
    case 'destroy':
      cmd = { verb, set };
      break;
    case 'swap':
      cmd = { verb, set, other: words.shift() ?? '' };
      break;
    default:
      throw new IpvsSyntaxError(`cannot parse ${show(line)}: expected create, add, del, flush, swap or destroy`);
  }
  if (comment !== undefined && cmd.verb !== 'add') throw new IpvsSyntaxError(`a comment belongs to add only: ${show(line)}`);
  if (skbmark !== undefined && cmd.verb !== 'add') throw new IpvsSyntaxError(`a skbmark belongs to add only: ${show(line)}`);
  if (words.length > 0) throw new IpvsSyntaxError(`unexpected ${show(words.join(' '))} in ${show(line)}`);
  validateIpset(cmd);
  return cmd;
}

export interface SavedSet {
  readonly spec: SetSpec;
  /** Members in the order listed, each with its comment and mark if any. */
  readonly entries: readonly { readonly entry: SetEntry; readonly comment?: string; readonly skbmark?: SkbMark }[];
}

/**
 * Reads `ipset save` output (every set, or the ones named). The kernel's
 * `bucketsize` and random `initval` of hash sets are dropped.
 */
export function parseIpsetSave(text: string): Map<string, SavedSet> {
  const sets = new Map<string, { spec: SetSpec; entries: { entry: SetEntry; comment?: string; skbmark?: SkbMark }[] }>();
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    if (raw === '') return;
    try {
      const line = raw.startsWith('create ') ? raw.replace(/ bucketsize \d+ initval 0x[0-9a-f]+$/, '') : raw;
      const cmd = parseLine(line, (name) => sets.get(name)?.spec.type);
      if (cmd.verb === 'create') {
        sets.set(cmd.set, { spec: cmd.spec, entries: [] });
      } else if (cmd.verb === 'add') {
        const s = sets.get(cmd.set);
        if (!s) throw new IpvsSyntaxError(`add to ${cmd.set} before its create line`);
        s.entries.push({ entry: cmd.entry, ...(cmd.comment !== undefined ? { comment: cmd.comment } : {}), ...(cmd.skbmark ? { skbmark: cmd.skbmark } : {}) });
      } else {
        throw new IpvsSyntaxError(`unexpected ${cmd.verb} line`);
      }
    } catch (e) {
      throw new IpvsSyntaxError(`ipset save, line ${i + 1}: ${(e as Error).message}`);
    }
  });
  return sets;
}

/** What LineBatch needs to build an `ipset restore` batch. */
export const ipsetLines: LineModel<IpsetCommand> = { validate: validateIpset, renderValid };
