// Typed `ip -batch -` lines for the dummy interface that holds the Service
// addresses (kube-ipvs0): create or remove it, set it up or down, add or
// remove one host address. Each command validates itself, renders as one
// line and parses that line back.
import type { LineModel } from './batch.ts';
import { checkHostAddress, IpvsSyntaxError, show } from './checks.ts';

export type IpCommand =
  | { readonly verb: 'add'; readonly object: 'link'; readonly device: string; readonly kind: 'dummy' }
  | { readonly verb: 'del'; readonly object: 'link'; readonly device: string }
  | { readonly verb: 'set'; readonly object: 'link'; readonly device: string; readonly state: 'up' | 'down' }
  | { readonly verb: 'add' | 'del'; readonly object: 'address'; readonly device: string; readonly address: string };

// IFNAMSIZ allows 15 characters; `ip` would read some words as keywords.
const devicePattern = /^[A-Za-z][A-Za-z0-9_.-]{0,14}$/;
const keywords = new Set(['dev', 'name', 'type', 'up', 'down', 'help', 'all', 'link', 'address', 'master', 'nomaster', 'group', 'alias', 'netns', 'mtu', 'index']);

export function checkDevice(device: unknown): void {
  if (typeof device !== 'string' || !devicePattern.test(device) || keywords.has(device)) {
    throw new IpvsSyntaxError(`invalid interface name ${show(device)} (a letter, then up to 14 letters, digits, _ . -; not an ip keyword)`);
  }
}

export function validateIp(cmd: IpCommand): void {
  if (typeof cmd !== 'object' || cmd === null) throw new IpvsSyntaxError(`invalid ip command ${show(cmd)}`);
  checkDevice(cmd.device);
  if (cmd.object === 'link') {
    if (cmd.verb === 'add' && cmd.kind !== 'dummy') throw new IpvsSyntaxError(`invalid link type ${show(cmd.kind)} (dummy)`);
    if (cmd.verb === 'set' && cmd.state !== 'up' && cmd.state !== 'down') throw new IpvsSyntaxError(`invalid link state ${show(cmd.state)}`);
    if (!['add', 'del', 'set'].includes(cmd.verb)) throw new IpvsSyntaxError(`invalid link verb ${show(cmd.verb)}`);
    return;
  }
  if (cmd.object !== 'address') throw new IpvsSyntaxError(`invalid ip object ${show((cmd as { object?: unknown }).object)}`);
  if (cmd.verb !== 'add' && cmd.verb !== 'del') throw new IpvsSyntaxError(`invalid address verb ${show(cmd.verb)}`);
  checkHostAddress('interface address', cmd.address);
}

/** "10.96.0.1/32" or "fd00::1/128": the address as a host prefix. */
export function hostPrefix(address: string): string {
  return `${address}/${address.includes(':') ? 128 : 32}`;
}

function renderValid(cmd: IpCommand): string {
  if (cmd.object === 'address') return `address ${cmd.verb} ${hostPrefix(cmd.address)} dev ${cmd.device}`;
  switch (cmd.verb) {
    case 'add': return `link add ${cmd.device} type ${cmd.kind}`;
    case 'del': return `link del ${cmd.device}`;
    case 'set': return `link set ${cmd.device} ${cmd.state}`;
  }
}

export function renderIp(cmd: IpCommand): string {
  validateIp(cmd);
  return renderValid(cmd);
}

/** Parses one line as renderIp() writes it; anything else is refused, naming the line. */
export function parseIp(line: string): IpCommand {
  if (typeof line !== 'string' || /[\n\r\0]/.test(line)) throw new IpvsSyntaxError(`invalid ip line ${show(line)}`);
  let cmd: IpCommand | undefined;
  let m: RegExpExecArray | null;
  if ((m = /^address (add|del) ([^ /]+)\/(\d+) dev (\S+)$/.exec(line))) {
    cmd = { verb: m[1] as 'add' | 'del', object: 'address', device: m[4], address: m[2] };
  } else if ((m = /^link add (\S+) type (\S+)$/.exec(line))) {
    cmd = { verb: 'add', object: 'link', device: m[1], kind: m[2] as 'dummy' };
  } else if ((m = /^link del (\S+)$/.exec(line))) {
    cmd = { verb: 'del', object: 'link', device: m[1] };
  } else if ((m = /^link set (\S+) (up|down)$/.exec(line))) {
    cmd = { verb: 'set', object: 'link', device: m[1], state: m[2] as 'up' | 'down' };
  }
  if (!cmd) throw new IpvsSyntaxError(`cannot parse ${show(line)}: expected "address add|del ADDR/LEN dev NAME" or "link add|del|set NAME ..."`);
  validateIp(cmd);
  const again = renderValid(cmd);
  if (again !== line) throw new IpvsSyntaxError(`${show(line)} is not in canonical form (${show(again)})`);
  return cmd;
}

/** What LineBatch needs to build an `ip -batch -` batch. */
export const ipLines: LineModel<IpCommand> = { validate: validateIp, renderValid };
