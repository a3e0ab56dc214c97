// Typed nftables commands: each one validates, renders itself as one line of
// an `nft -f -` batch, and parses that line back. Only the command shapes
// kproxy sends are modelled; rules stay text (the fake kernel and the tracer
// read them), but their table, chain and references are checked here.

import { KproxyError } from '../../lib/errors.ts';

export type NftFamily = 'ip' | 'ip6';
export type Verb = 'add' | 'delete' | 'flush';

const chainTypes = ['filter', 'nat'] as const;
export const hooks = ['prerouting', 'input', 'forward', 'output', 'postrouting'] as const;

export interface BaseChainSpec {
  readonly type: (typeof chainTypes)[number];
  readonly hook: (typeof hooks)[number];
  /** As nft prints it: "dstnat", "srcnat", "dstnat - 10", "-110". */
  readonly priority: string;
}

/** A named set or map. `key`/`data` hold nft's own type text. */
export interface SetSpec {
  /** 'type' for plain datatypes, 'typeof' for expressions (numgen, th dport). */
  readonly keyword: 'type' | 'typeof';
  readonly key: string;
  /** Present for maps: the data type ("verdict", "ipv4_addr . inet_service", ...). */
  readonly data?: string;
  readonly flags?: readonly string[];
  /** Default element timeout, seconds (dynamic sets). */
  readonly timeout?: number;
  readonly size?: number;
}

export interface Element {
  readonly key: string;
  /** Maps only: the data (an address . port, or a verdict such as "goto x"). */
  readonly value?: string;
}

export type Command =
  | { readonly verb: Verb; readonly object: 'table'; readonly family: NftFamily; readonly table: string }
  | { readonly verb: Verb; readonly object: 'chain'; readonly family: NftFamily; readonly table: string; readonly name: string; readonly base?: BaseChainSpec }
  | { readonly verb: 'add'; readonly object: 'rule'; readonly family: NftFamily; readonly table: string; readonly chain: string; readonly rule: string }
  | { readonly verb: Verb; readonly object: 'set' | 'map'; readonly family: NftFamily; readonly table: string; readonly name: string; readonly spec?: SetSpec }
  | { readonly verb: 'add' | 'delete'; readonly object: 'element'; readonly family: NftFamily; readonly table: string; readonly set: string; readonly elements: readonly Element[] };

export class NftSyntaxError extends KproxyError {
  constructor(message: string) {
    super('KPROXY_NFT_INVALID', message);
    this.name = 'NftSyntaxError';
  }
}

// nft's identifier rule (scanner.l): a letter, then letters, digits, / \ _ . -
const namePattern = /^[A-Za-z][A-Za-z0-9/_.-]{0,255}$/;
const forbiddenInText = /[\n;#]/;
const badKey = /[{},\n;#]|^\s*$/;
const badValue = /[{},\n;#]|^\s*$| : /;

function checkName(what: string, name: string): void {
  if (!namePattern.test(name)) throw new NftSyntaxError(`invalid ${what} name ${JSON.stringify(name)}`);
}

function checkText(what: string, text: string): void {
  if (text.trim() === '' || forbiddenInText.test(text)) throw new NftSyntaxError(`invalid ${what} ${JSON.stringify(text)}`);
}

/** Throws NftSyntaxError when the command could not be a valid nft line. */
export function validate(cmd: Command): void {
  if (cmd.family !== 'ip' && cmd.family !== 'ip6') throw new NftSyntaxError(`invalid family ${String(cmd.family)}`);
  checkName('table', cmd.table);
  switch (cmd.object) {
    case 'table':
      return;
    case 'chain':
      checkName('chain', cmd.name);
      if (cmd.base) {
        if (cmd.verb !== 'add') throw new NftSyntaxError(`a base chain spec belongs to "add chain" only (${cmd.name})`);
        if (!chainTypes.includes(cmd.base.type)) throw new NftSyntaxError(`invalid chain type ${cmd.base.type}`);
        if (!hooks.includes(cmd.base.hook)) throw new NftSyntaxError(`invalid hook ${cmd.base.hook}`);
        if (!/^(-?\d+|(dstnat|srcnat|filter|raw|mangle|security)( [+-] \d+)?)$/.test(cmd.base.priority)) {
          throw new NftSyntaxError(`invalid priority ${JSON.stringify(cmd.base.priority)}`);
        }
      }
      return;
    case 'rule':
      checkName('chain', cmd.chain);
      checkText('rule', cmd.rule);
      if (!balanced(cmd.rule)) throw new NftSyntaxError(`unbalanced braces in rule ${JSON.stringify(cmd.rule)}`);
      return;
    case 'set':
    case 'map':
      checkName(cmd.object, cmd.name);
      if (cmd.spec) {
        if (cmd.verb !== 'add') throw new NftSyntaxError(`a ${cmd.object} spec belongs to "add ${cmd.object}" only`);
        checkText('key type', cmd.spec.key);
        if ((cmd.object === 'map') !== (cmd.spec.data !== undefined)) {
          throw new NftSyntaxError(`${cmd.object} ${cmd.name}: a map needs data, a set has none`);
        }
        if (cmd.spec.data !== undefined) checkText('data type', cmd.spec.data);
        if (cmd.spec.timeout !== undefined && !(Number.isInteger(cmd.spec.timeout) && cmd.spec.timeout > 0)) {
          throw new NftSyntaxError(`invalid timeout ${cmd.spec.timeout}`);
        }
      } else if (cmd.verb === 'add') {
        throw new NftSyntaxError(`add ${cmd.object} ${cmd.name} needs a type`);
      }
      return;
    case 'element':
      checkName('set', cmd.set);
      if (cmd.elements.length === 0) throw new NftSyntaxError(`${cmd.verb} element ${cmd.set}: no elements`);
      for (const e of cmd.elements) {
        if (badKey.test(e.key)) throw new NftSyntaxError(`invalid element key ${JSON.stringify(e.key)}`);
        if (e.value !== undefined && badValue.test(e.value)) throw new NftSyntaxError(`invalid element value ${JSON.stringify(e.value)}`);
        if (cmd.verb === 'delete' && e.value !== undefined) throw new NftSyntaxError('delete element takes keys only');
      }
      return;
  }
}

function balanced(text: string): boolean {
  let depth = 0;
  for (const c of text) {
    if (c === '{') depth++;
    else if (c === '}' && --depth < 0) return false;
  }
  return depth === 0;
}

/** nft's own duration format: 10800 → "3h", 100 → "1m40s". */
export function formatTimeout(seconds: number): string {
  const units: [string, number][] = [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
  let rest = seconds;
  let out = '';
  for (const [u, n] of units) {
    const q = Math.floor(rest / n);
    if (q > 0) out += `${q}${u}`;
    rest -= q * n;
  }
  return out || '0s';
}

export function parseTimeout(text: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
  if (!m || text === '') throw new NftSyntaxError(`invalid timeout ${JSON.stringify(text)}`);
  return (+(m[1] ?? 0)) * 86400 + (+(m[2] ?? 0)) * 3600 + (+(m[3] ?? 0)) * 60 + (+(m[4] ?? 0));
}

function renderSpec(spec: SetSpec): string {
  const parts = [`${spec.keyword} ${spec.key}${spec.data !== undefined ? ` : ${spec.data}` : ''}`];
  if (spec.size !== undefined) parts.push(`size ${spec.size}`);
  if (spec.flags?.length) parts.push(`flags ${spec.flags.join(',')}`);
  if (spec.timeout !== undefined) parts.push(`timeout ${formatTimeout(spec.timeout)}`);
  return `{ ${parts.join(' ; ')} ; }`;
}

export function renderElement(e: Element): string {
  return e.value === undefined ? e.key : `${e.key} : ${e.value}`;
}

/** The command as one line of an nft batch (validated first). */
export function render(cmd: Command): string {
  validate(cmd);
  return renderValid(cmd);
}

function renderValid(cmd: Command): string {
  const where = `${cmd.family} ${cmd.table}`;
  switch (cmd.object) {
    case 'table':
      return `${cmd.verb} table ${where}`;
    case 'chain':
      return cmd.base
        ? `${cmd.verb} chain ${where} ${cmd.name} { type ${cmd.base.type} hook ${cmd.base.hook} priority ${cmd.base.priority} ; policy accept ; }`
        : `${cmd.verb} chain ${where} ${cmd.name}`;
    case 'rule':
      return `add rule ${where} ${cmd.chain} ${cmd.rule}`;
    case 'set':
    case 'map':
      return cmd.spec ? `${cmd.verb} ${cmd.object} ${where} ${cmd.name} ${renderSpec(cmd.spec)}` : `${cmd.verb} ${cmd.object} ${where} ${cmd.name}`;
    case 'element':
      return `${cmd.verb} element ${where} ${cmd.set} { ${cmd.elements.map(renderElement).join(', ')} }`;
  }
}

/** Splits `a, b, c` at top-level commas (inside one pair of braces). */
export function splitTopLevel(text: string, sep = ','): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const c of text) {
    if (c === '{' || c === '[') depth++;
    if (c === '}' || c === ']') depth--;
    if (c === sep && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else {
      cur += c;
    }
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

/** Splits `key : value` of a map element (":" inside [v6]:port or v6 text is not a separator). */
export function parseElement(text: string): Element {
  const i = text.indexOf(' : ');
  return i < 0 ? { key: text.trim() } : { key: text.slice(0, i).trim(), value: text.slice(i + 3).trim() };
}

function parseSpec(body: string): SetSpec {
  let keyword: 'type' | 'typeof' | undefined;
  let key = '';
  let data: string | undefined;
  let flags: string[] | undefined;
  let timeout: number | undefined;
  let size: number | undefined;
  for (const part of body.split(';').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(typeof|type|flags|timeout|size)\s+(.*)$/.exec(part);
    if (!m) throw new NftSyntaxError(`unknown set property ${JSON.stringify(part)}`);
    const [, word, rest] = m;
    if (word === 'type' || word === 'typeof') {
      keyword = word;
      const i = rest.indexOf(' : ');
      key = i < 0 ? rest : rest.slice(0, i);
      data = i < 0 ? undefined : rest.slice(i + 3);
    } else if (word === 'flags') {
      flags = rest.split(',').map((f) => f.trim());
    } else if (word === 'timeout') {
      timeout = parseTimeout(rest);
    } else {
      size = Number(rest);
    }
  }
  if (!keyword) throw new NftSyntaxError(`set without a type: ${JSON.stringify(body)}`);
  return { keyword, key, ...(data !== undefined ? { data } : {}), ...(size !== undefined ? { size } : {}), ...(flags ? { flags } : {}), ...(timeout !== undefined ? { timeout } : {}) };
}

function braceBody(text: string, what: string): string {
  const t = text.trim();
  if (!t.startsWith('{') || !t.endsWith('}')) throw new NftSyntaxError(`${what}: expected { ... }, got ${JSON.stringify(text)}`);
  return t.slice(1, -1).trim();
}

/** Parses one line of a batch as render() writes it. */
export function parseCommand(line: string): Command {
  const m = /^(add|delete|flush)\s+(table|chain|rule|set|map|element)\s+(ip6?)\s+(\S+)(?:\s+(.*))?$/.exec(line.trim());
  if (!m) throw new NftSyntaxError(`cannot parse ${JSON.stringify(line)}`);
  const [, verb, object, family, table, rest = ''] = m as unknown as [string, Verb, Command['object'], NftFamily, string, string?];
  let cmd: Command;
  switch (object) {
    case 'table':
      if (rest) throw new NftSyntaxError(`unexpected ${JSON.stringify(rest)} after table`);
      cmd = { verb, object, family, table };
      break;
    case 'chain': {
      const c = /^(\S+)(?:\s+(\{.*\}))?$/.exec(rest);
      if (!c) throw new NftSyntaxError(`cannot parse chain in ${JSON.stringify(line)}`);
      let base: BaseChainSpec | undefined;
      if (c[2]) {
        const b = /^type (\w+) hook (\w+) priority ([^;]+?) ; policy accept ;$/.exec(braceBody(c[2], 'chain'));
        if (!b) throw new NftSyntaxError(`cannot parse base chain spec in ${JSON.stringify(line)}`);
        base = { type: b[1] as BaseChainSpec['type'], hook: b[2] as BaseChainSpec['hook'], priority: b[3] };
      }
      cmd = base ? { verb, object, family, table, name: c[1], base } : { verb, object, family, table, name: c[1] };
      break;
    }
    case 'rule': {
      if (verb !== 'add') throw new NftSyntaxError(`only "add rule" is supported: ${JSON.stringify(line)}`);
      const r = /^(\S+)\s+(.+)$/.exec(rest);
      if (!r) throw new NftSyntaxError(`rule without a body: ${JSON.stringify(line)}`);
      cmd = { verb, object, family, table, chain: r[1], rule: r[2] };
      break;
    }
    case 'set':
    case 'map': {
      const s = /^(\S+)(?:\s+(\{.*\}))?$/.exec(rest);
      if (!s) throw new NftSyntaxError(`cannot parse ${object} in ${JSON.stringify(line)}`);
      cmd = s[2]
        ? { verb, object, family, table, name: s[1], spec: parseSpec(braceBody(s[2], object)) }
        : { verb, object, family, table, name: s[1] };
      break;
    }
    case 'element': {
      if (verb === 'flush') throw new NftSyntaxError('flush element is not a command');
      const e = /^(\S+)\s+(\{.*\})$/.exec(rest);
      if (!e) throw new NftSyntaxError(`cannot parse elements in ${JSON.stringify(line)}`);
      cmd = { verb, object, family, table, set: e[1], elements: splitTopLevel(braceBody(e[2], 'element')).map(parseElement) };
      break;
    }
  }
  validate(cmd);
  return cmd;
}

/**
 * One batch for `nft -f -`. Commands are validated as they are added; the
 * first error is kept (and later adds ignored) so a caller checks once.
 */
export class Transaction {
  readonly commands: Command[] = [];
  private firstError: Error | undefined;

  add(cmd: Command): this {
    if (this.firstError) return this;
    try {
      validate(cmd);
      this.commands.push(cmd);
    } catch (e) {
      this.firstError = e as Error;
    }
    return this;
  }

  get error(): Error | undefined {
    return this.firstError;
  }

  get size(): number {
    return this.commands.length;
  }

  /** The exact batch. */
  toString(): string {
    if (this.commands.length === 0) return '';
    // Commands were validated when added.
    return this.commands.map(renderValid).join('\n') + '\n';
  }
}
