// Typed `ipvsadm -R` lines: virtual services (-A/-E/-D) and their real
// servers (-a/-e/-d). Each command validates itself, renders as one line in
// the form `ipvsadm -Sn` prints, and parses that line back. Only what
// kproxy sends is modelled: TCP/UDP/SCTP services by address and port,
// firewall-mark services (-f MARK, -6 for IPv6; no -M netmask), and
// masquerading real servers (-m).
//
// `-E` and `-e` replace the whole entry in the kernel: an -E without -s
// resets the scheduler to wlc and drops persistence, and an -e without -m
// means direct routing (the server turns to -g, or is not found when its
// port differs from the service's; checked in user-mode-linux), so edits
// always carry the full spec here.
import type { LineModel } from './batch.ts';
import { checkHostAddress, checkInteger, checkPort, ipvsHostPort, IpvsSyntaxError, show, splitHostPort } from './checks.ts';

export type IpvsProtocol = 'tcp' | 'udp' | 'sctp';
export const ipvsProtocols: readonly IpvsProtocol[] = ['tcp', 'udp', 'sctp'];
const protocolFlag: Readonly<Record<IpvsProtocol, string>> = { tcp: '-t', udp: '-u', sctp: '--sctp-service' };

/** The schedulers kproxy offers (kernel modules ip_vs_<name>): kube-proxy's list. */
export const schedulers = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'mh', 'fo', 'ovf'] as const;
export type Scheduler = (typeof schedulers)[number];

/** Scheduler flags by name, per scheduler (ipvsadm's -b); printed in this order. */
export const schedulerFlags = {
  sh: ['sh-fallback', 'sh-port'],
  mh: ['mh-fallback', 'mh-port'],
} as const;
export type SchedulerFlag = (typeof schedulerFlags)[keyof typeof schedulerFlags][number];

/** ipvsadm's limit for a persistence timeout: 31 days (checked). */
export const maxPersistence = 86400 * 31;
/** kproxy's cap for a weight (ipvsadm takes up to 2^31-1; kproxy sends 0 and 1, and small wrr weights). */
export const maxWeight = 65535;

/** A virtual service by protocol, address and port. */
export interface AddressServiceKey {
  readonly protocol: IpvsProtocol;
  readonly address: string;
  readonly port: number;
}

/** A virtual service by firewall mark: packets carrying exactly this mark, of one family. */
export interface FwmarkServiceKey {
  readonly fwmark: number;
  readonly family: 4 | 6;
}

export type ServiceKey = AddressServiceKey | FwmarkServiceKey;

export function isFwmark(key: ServiceKey): key is FwmarkServiceKey {
  return (key as FwmarkServiceKey).fwmark !== undefined;
}

/** The family of a virtual service. */
export function serviceFamily(key: ServiceKey): 4 | 6 {
  return isFwmark(key) ? key.family : key.address.includes(':') ? 6 : 4;
}

/** A virtual service's identity as text ("tcp 10.96.0.1:80", "fwm 65536 4"): map keys, logs. */
export function vsId(key: ServiceKey): string {
  if (isFwmark(key)) return `fwm ${key.fwmark} ${key.family}`;
  return `${key.protocol} ${ipvsHostPort(key.address, key.port)}`;
}

/** Largest firewall mark (marks are 32-bit; 0 means none). */
export const maxFwmark = 0xffffffff;

export interface ServiceSpec {
  readonly scheduler: Scheduler;
  /** Names from schedulerFlags[scheduler]; omitted or empty for none. */
  readonly flags?: readonly SchedulerFlag[];
  /** Persistence timeout in seconds (ClientIP affinity); omitted for none. */
  readonly persistence?: number;
}

export interface ServerKey {
  readonly address: string;
  readonly port: number;
}

export type IpvsCommand =
  | { readonly verb: 'add' | 'edit'; readonly object: 'service'; readonly service: ServiceKey; readonly spec: ServiceSpec }
  | { readonly verb: 'delete'; readonly object: 'service'; readonly service: ServiceKey }
  | { readonly verb: 'add' | 'edit'; readonly object: 'server'; readonly service: ServiceKey; readonly server: ServerKey; readonly weight: number }
  | { readonly verb: 'delete'; readonly object: 'server'; readonly service: ServiceKey; readonly server: ServerKey };

const letters: Readonly<Record<IpvsCommand['object'], Readonly<Record<IpvsCommand['verb'], string>>>> = {
  service: { add: '-A', edit: '-E', delete: '-D' },
  server: { add: '-a', edit: '-e', delete: '-d' },
};

export function checkServiceKey(service: ServiceKey): void {
  if (typeof service !== 'object' || service === null) throw new IpvsSyntaxError(`invalid virtual service ${show(service)}`);
  if (isFwmark(service)) {
    checkInteger('firewall mark', service.fwmark, 1, maxFwmark);
    if (service.family !== 4 && service.family !== 6) throw new IpvsSyntaxError(`invalid family ${show(service.family)} (4 or 6)`);
    if ('address' in service || 'protocol' in service) throw new IpvsSyntaxError('a firewall-mark service has no address or protocol');
    return;
  }
  if (!ipvsProtocols.includes(service.protocol)) throw new IpvsSyntaxError(`invalid protocol ${show(service.protocol)} (tcp, udp or sctp)`);
  checkHostAddress('virtual service address', service.address);
  checkPort('virtual service port', service.port);
}

export function checkServiceSpec(spec: ServiceSpec): void {
  if (typeof spec !== 'object' || spec === null) throw new IpvsSyntaxError(`invalid service spec ${show(spec)}`);
  if (!schedulers.includes(spec.scheduler)) throw new IpvsSyntaxError(`invalid scheduler ${show(spec.scheduler)} (one of ${schedulers.join(', ')})`);
  const flags = spec.flags ?? [];
  if (!Array.isArray(flags)) throw new IpvsSyntaxError(`invalid scheduler flags ${show(flags)}`);
  const allowed: readonly string[] = spec.scheduler === 'sh' || spec.scheduler === 'mh' ? schedulerFlags[spec.scheduler] : [];
  for (const f of flags) {
    if (!allowed.includes(f)) {
      throw new IpvsSyntaxError(`invalid scheduler flag ${show(f)} for ${spec.scheduler}${allowed.length ? ` (${allowed.join(', ')})` : ' (it takes none)'}`);
    }
  }
  if (new Set(flags).size !== flags.length) throw new IpvsSyntaxError(`repeated scheduler flag in ${flags.join(',')}`);
  if (spec.persistence !== undefined) checkInteger('persistence timeout', spec.persistence, 1, maxPersistence);
}

export function checkServerKey(service: ServiceKey, server: ServerKey): void {
  if (typeof server !== 'object' || server === null) throw new IpvsSyntaxError(`invalid real server ${show(server)}`);
  const family = checkHostAddress('real server address', server.address);
  checkPort('real server port', server.port);
  if (family !== serviceFamily(service)) {
    throw new IpvsSyntaxError(`real server ${server.address} is not of the family of virtual service ${serviceText(service)}`);
  }
}

/** Throws IpvsSyntaxError when the command could not be a valid `ipvsadm -R` line. */
export function validateIpvs(cmd: IpvsCommand): void {
  if (typeof cmd !== 'object' || cmd === null || !(cmd.object in letters) || !(cmd.verb in letters.service)) {
    throw new IpvsSyntaxError(`invalid ipvsadm command ${show(JSON.stringify(cmd))}`);
  }
  checkServiceKey(cmd.service);
  if (cmd.object === 'service') {
    if (cmd.verb !== 'delete') checkServiceSpec(cmd.spec);
    return;
  }
  checkServerKey(cmd.service, cmd.server);
  if (cmd.verb !== 'delete') checkInteger('weight', cmd.weight, 0, maxWeight);
}

export function serviceText(service: ServiceKey): string {
  if (isFwmark(service)) return `-f ${service.fwmark}${service.family === 6 ? ' -6' : ''}`;
  return `${protocolFlag[service.protocol]} ${ipvsHostPort(service.address, service.port)}`;
}

function renderSpec(spec: ServiceSpec): string {
  let out = ` -s ${spec.scheduler}`;
  if (spec.persistence !== undefined) out += ` -p ${spec.persistence}`;
  const flags = spec.flags ?? [];
  if (flags.length > 0) {
    // ipvsadm prints flags in bit order (fallback before port).
    const order: readonly string[] = spec.scheduler === 'sh' || spec.scheduler === 'mh' ? schedulerFlags[spec.scheduler] : [];
    out += ` -b ${[...flags].sort((a, b) => order.indexOf(a) - order.indexOf(b)).join(',')}`;
  }
  return out;
}

function renderValid(cmd: IpvsCommand): string {
  const head = `${letters[cmd.object][cmd.verb]} ${serviceText(cmd.service)}`;
  if (cmd.object === 'service') return cmd.verb === 'delete' ? head : head + renderSpec(cmd.spec);
  const server = `${head} -r ${ipvsHostPort(cmd.server.address, cmd.server.port)}`;
  return cmd.verb === 'delete' ? server : `${server} -m -w ${cmd.weight}`;
}

/** The command as one line of an `ipvsadm -R` batch (validated first). */
export function renderIpvs(cmd: IpvsCommand): string {
  validateIpvs(cmd);
  return renderValid(cmd);
}

function takeService(words: string[], line: string): ServiceKey {
  if (words[0] === '-f') {
    words.shift();
    const mark = words.shift();
    if (mark === undefined) throw new IpvsSyntaxError(`missing firewall mark in ${show(line)}`);
    const six = words[0] as string === '-6';
    if (six) words.shift();
    return { fwmark: number(mark, 'firewall mark'), family: six ? 6 : 4 };
  }
  const flag = words.shift();
  const protocol = (Object.keys(protocolFlag) as IpvsProtocol[]).find((p) => protocolFlag[p] === flag);
  if (!protocol) throw new IpvsSyntaxError(`expected -t, -u or --sctp-service in ${show(line)}`);
  const where = words.shift();
  if (where === undefined) throw new IpvsSyntaxError(`missing service address in ${show(line)}`);
  return { protocol, ...splitHostPort(where) };
}

function takeOption(words: string[], option: string, line: string): string {
  if (words[0] !== option) throw new IpvsSyntaxError(`expected ${option} in ${show(line)}`);
  words.shift();
  const value = words.shift();
  if (value === undefined) throw new IpvsSyntaxError(`${option} without a value in ${show(line)}`);
  return value;
}

function number(text: string, what: string): number {
  if (!/^\d{1,10}$/.test(text)) throw new IpvsSyntaxError(`invalid ${what} ${show(text)}`);
  return Number(text);
}

/**
 * Parses one line as renderIpvs() writes it (also what `ipvsadm -Sn` prints
 * for kproxy's entries). Anything else is refused, naming the line.
 */
export function parseIpvs(line: string): IpvsCommand {
  if (typeof line !== 'string' || /[\n\r\0]/.test(line)) throw new IpvsSyntaxError(`invalid ipvsadm line ${show(line)}`);
  const words = line.split(' ');
  const letter = words.shift();
  const object = letter === '-A' || letter === '-E' || letter === '-D' ? 'service' : letter === '-a' || letter === '-e' || letter === '-d' ? 'server' : undefined;
  if (!object) throw new IpvsSyntaxError(`cannot parse ${show(line)}: expected -A, -E, -D, -a, -e or -d`);
  const verbs: Readonly<Record<string, IpvsCommand['verb']>> = { A: 'add', E: 'edit', D: 'delete', a: 'add', e: 'edit', d: 'delete' };
  const verb = verbs[letter!.slice(1)];
  const service = takeService(words, line);
  let cmd: IpvsCommand;
  if (object === 'service') {
    if (verb === 'delete') {
      cmd = { verb, object, service };
    } else {
      const scheduler = takeOption(words, '-s', line) as Scheduler;
      let persistence: number | undefined;
      let flags: SchedulerFlag[] | undefined;
      if (words[0] === '-p') persistence = number(takeOption(words, '-p', line), 'persistence timeout');
      if (words[0] === '-b') flags = takeOption(words, '-b', line).split(',') as SchedulerFlag[];
      const spec: ServiceSpec = { scheduler, ...(flags ? { flags } : {}), ...(persistence !== undefined ? { persistence } : {}) };
      cmd = { verb, object, service, spec };
    }
  } else {
    const server = splitHostPort(takeOption(words, '-r', line));
    if (verb === 'delete') {
      cmd = { verb, object, service, server };
    } else {
      if (words.shift() !== '-m') throw new IpvsSyntaxError(`expected -m (masquerading) in ${show(line)}: kproxy programs only masquerading real servers`);
      const weight = number(takeOption(words, '-w', line), 'weight');
      cmd = { verb, object, service, server, weight };
    }
  }
  if (words.length > 0) throw new IpvsSyntaxError(`unexpected ${show(words.join(' '))} in ${show(line)}`);
  validateIpvs(cmd);
  const again = renderValid(cmd);
  if (again !== line) throw new IpvsSyntaxError(`${show(line)} is not in canonical form (${show(again)})`);
  return cmd;
}

/** What LineBatch needs to build an `ipvsadm -R` batch. */
export const ipvsLines: LineModel<IpvsCommand> = { validate: validateIpvs, renderValid };
