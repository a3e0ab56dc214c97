// Start-up configuration: defaults ← KubeProxyConfiguration file (--config)
// ← flags. Validated once; every problem is listed in one ConfigError;
// the result is frozen.
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { ConfigError } from '../lib/errors.ts';
import { cidrFamily } from '../lib/net.ts';
import { defaultMode, modeNames, modes, type ProxyMode } from '../modes/registry.ts';
import { parseArgs, parseBindAddress, parseDuration, splitList, type BindAddress } from './flags.ts';
import { modeSettings } from './mode-settings.ts';

export type Command = 'run' | 'cleanup' | 'dump' | 'diff' | 'explain';

export interface ProxyConfig {
  readonly command: Command;
  readonly mode: ProxyMode;
  readonly kubeconfig?: string;
  /** --hostname-override, or the host name, lowercased as kube-proxy does. */
  readonly nodeName: string;
  readonly clusterCIDRs: readonly string[];
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  /** CIDRs from --nodeport-addresses (without "primary"). */
  readonly nodePortAddresses: readonly string[];
  /** --nodeport-addresses primary: NodePorts answer on the Node object's addresses only. */
  readonly nodePortPrimary: boolean;
  /** --external-ip-cidrs: externalIPs outside these are refused; empty = all allowed. */
  readonly externalIPCIDRs: readonly string[];
  readonly syncPeriodMs: number;
  readonly minSyncPeriodMs: number;
  /** The chosen mode's own settings (its descriptor's `settings`), validated, by key. */
  readonly modeSettings: Readonly<Record<string, unknown>>;
  /** null = disabled. */
  readonly metricsBindAddress: BindAddress | null;
  /** null = disabled. */
  readonly healthzBindAddress: BindAddress | null;
  /** pino level from --log-level or --v; undefined keeps $KPROXY_LOG_LEVEL or info. */
  readonly logLevel?: string;
  readonly sourceFile?: string;
  /** dump --live */
  readonly live: boolean;
  /** explain's argument: IP:PORT[/PROTO] or NAMESPACE/NAME. */
  readonly target?: string;
}

export const defaults = {
  mode: defaultMode as ProxyMode,
  masqueradeBit: 14,
  syncPeriodMs: 30_000,
  minSyncPeriodMs: 1_000,
  metricsPort: 10249,
  healthzPort: 10256,
  metricsBindAddress: '127.0.0.1:10249',
  healthzBindAddress: '0.0.0.0:10256',
};

/** kube-proxy's mode names: a name kproxy does not implement gets "not supported" rather than "unknown". */
const kubeProxyModes: readonly string[] = ['iptables', 'nftables', 'ipvs', 'userspace', 'kernelspace'];
const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const commands: readonly string[] = ['dump', 'diff', 'explain'];

/** Settings as strings/values before validation, from either the file or the flags. */
interface RawSettings {
  /** Where each setting came from ("--flag" or "file.yaml:LINE"), for problem messages. */
  where?: Partial<Record<string, string>>;
  mode?: string;
  kubeconfig?: string;
  hostnameOverride?: string;
  clusterCIDR?: string;
  masqueradeAll?: boolean;
  masqueradeBit?: number;
  nodePortAddresses?: string[];
  syncPeriod?: string;
  minSyncPeriod?: string;
  metricsBindAddress?: string;
  healthzBindAddress?: string;
  verbosity?: number;
  /**
   * The file's mode blocks other than iptables (nftables, ipvs, ...): in that
   * mode, a block that is present stands for the iptables block's
   * masqueradeAll, masqueradeBit, syncPeriod and minSyncPeriod.
   */
  blocks?: Record<string, RawSettings>;
  /** Fields of the modes' own settings (e.g. "ipvs.scheduler") as the file gives them, with where they are. */
  modeFields?: Map<string, { value: unknown; where: string }>;
}

export interface LoadOptions {
  /** Host name used when --hostname-override is not given (tests). */
  readonly hostname?: string;
}

/** Parses and validates argv (without node and script); throws ConfigError listing every problem. */
export function loadConfig(argv: readonly string[], opts: LoadOptions = {}): ProxyConfig {
  const parsed = parseArgs(argv);
  const problems = [...parsed.problems];
  const v = parsed.values;
  const str = (name: string): string | undefined => (typeof v.get(name) === 'string' ? (v.get(name) as string) : undefined);

  let command: Command = 'run';
  const positional = [...parsed.positional];
  if (positional.length > 0 && commands.includes(positional[0])) command = positional.shift() as Command;
  if (v.get('cleanup') === true) {
    if (command !== 'run') problems.push(`--cleanup cannot be combined with the ${command} command`);
    command = 'cleanup';
  }
  let target: string | undefined;
  if (command === 'explain') {
    if (positional.length === 0) problems.push('explain needs an argument: IP:PORT[/PROTO] or NAMESPACE/NAME');
    else target = positional.shift();
  }
  if (positional.length > 0) {
    problems.push(`unexpected argument${positional.length > 1 ? 's' : ''}: ${positional.join(' ')} (commands: ${commands.join(', ')}, dns-cache)`);
  }
  if (v.has('live') && command !== 'dump') problems.push('--live only applies to the dump command');

  // The config file first, so flags override it.
  const file: RawSettings = {};
  const configPath = str('config');
  if (configPath !== undefined) problems.push(...readConfigFile(configPath, file));

  const flags: RawSettings = {
    mode: str('proxy-mode'),
    kubeconfig: str('kubeconfig'),
    hostnameOverride: str('hostname-override'),
    clusterCIDR: str('cluster-cidr'),
    masqueradeAll: v.get('masquerade-all') as boolean | undefined,
    masqueradeBit: v.get('iptables-masquerade-bit') as number | undefined,
    nodePortAddresses: str('nodeport-addresses') === undefined ? undefined : splitList(str('nodeport-addresses')!),
    syncPeriod: str('iptables-sync-period'),
    minSyncPeriod: str('iptables-min-sync-period'),
    metricsBindAddress: str('metrics-bind-address'),
    healthzBindAddress: str('healthz-bind-address'),
    verbosity: v.get('v') as number | undefined,
  };
  const flagNames: Record<string, string> = {
    mode: '--proxy-mode', kubeconfig: '--kubeconfig', hostnameOverride: '--hostname-override', clusterCIDR: '--cluster-cidr',
    masqueradeAll: '--masquerade-all', masqueradeBit: '--iptables-masquerade-bit', nodePortAddresses: '--nodeport-addresses',
    syncPeriod: '--iptables-sync-period', minSyncPeriod: '--iptables-min-sync-period',
    metricsBindAddress: '--metrics-bind-address', healthzBindAddress: '--healthz-bind-address', verbosity: '--v',
  };
  const s: RawSettings = { ...file };
  const where: Record<string, string | undefined> = { ...file.where };
  const chosen = modes.find((m) => m.name === (flags.mode ?? file.mode ?? defaults.mode));
  const block = chosen && chosen.configBlock !== 'iptables' ? file.blocks?.[chosen.configBlock] : undefined;
  if (block) {
    for (const k of commonBlockFields) {
      (s as Record<string, unknown>)[k] = block[k];
      where[k] = block.where?.[k];
    }
  }
  for (const [k, val] of Object.entries(flags)) {
    if (val === undefined) continue;
    (s as Record<string, unknown>)[k] = val;
    where[k] = flagNames[k];
  }
  const w = (k: string, fallback: string): string => where[k] ?? fallback;

  // mode
  const mode = s.mode === undefined || s.mode === '' ? defaults.mode : s.mode;
  const supported = modeNames();
  if (!supported.includes(mode)) {
    problems.push(kubeProxyModes.includes(mode)
      ? `${w('mode', 'proxy mode')}: proxy mode "${mode}" is not supported by kproxy (supported: ${supported.join(', ')})`
      : `${w('mode', 'proxy mode')}: unknown proxy mode "${mode}" (supported: ${supported.join(', ')})`);
  }

  // node name
  const nodeName = (s.hostnameOverride?.trim() || opts.hostname || osHostname()).toLowerCase();
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(nodeName) || nodeName.length > 253) {
    problems.push(`${w('hostnameOverride', 'node name')}: node name "${nodeName}" is not a valid DNS-1123 subdomain (set --hostname-override)`);
  }

  // cluster CIDRs: at most one per family, as kube-proxy allows dual-stack pairs
  const clusterCIDRs = s.clusterCIDR === undefined ? [] : splitList(s.clusterCIDR);
  const seenFamilies = new Set<number>();
  for (const c of clusterCIDRs) {
    const fam = cidrFamily(c);
    if (fam === 0) problems.push(`${w('clusterCIDR', 'cluster CIDR')}: "${c}" is not a valid CIDR`);
    else if (seenFamilies.has(fam)) problems.push(`${w('clusterCIDR', 'cluster CIDR')}: "${c}": at most one CIDR per IP family`);
    else seenFamilies.add(fam);
  }

  // externalIPs allowed (kproxy's own flag: refuses CVE-2020-8554 interception without an admission webhook)
  const externalIPCIDRs = splitList(str('external-ip-cidrs') ?? '');
  for (const c of externalIPCIDRs) if (cidrFamily(c) === 0) problems.push(`--external-ip-cidrs: "${c}" is not a CIDR`);

  // nodeport addresses
  let nodePortPrimary = false;
  const nodePortAddresses: string[] = [];
  for (const a of s.nodePortAddresses ?? []) {
    if (a === 'primary') nodePortPrimary = true;
    else if (cidrFamily(a) === 0) problems.push(`${w('nodePortAddresses', 'nodeport addresses')}: "${a}" is not a CIDR or "primary"`);
    else nodePortAddresses.push(a);
  }
  if (nodePortPrimary && nodePortAddresses.length > 0) problems.push(`${w('nodePortAddresses', 'nodeport addresses')}: "primary" cannot be combined with CIDRs`);

  // the modes' own settings (those of other modes are checked too: a typo is a typo)
  const settings = modeSettings(mode, v, file.modeFields ?? new Map(), problems);
  if (settings.replaced.syncPeriod) [s.syncPeriod, where.syncPeriod] = settings.replaced.syncPeriod;
  if (settings.replaced.minSyncPeriod) [s.minSyncPeriod, where.minSyncPeriod] = settings.replaced.minSyncPeriod;

  // durations
  const syncPeriodMs = duration(s.syncPeriod, defaults.syncPeriodMs, w('syncPeriod', 'sync period'), problems, false);
  const minSyncPeriodMs = duration(s.minSyncPeriod, defaults.minSyncPeriodMs, w('minSyncPeriod', 'min sync period'), problems, true);
  if (syncPeriodMs !== undefined && minSyncPeriodMs !== undefined && minSyncPeriodMs > syncPeriodMs) {
    problems.push(`${w('minSyncPeriod', 'min sync period')}: min sync period (${s.minSyncPeriod ?? '1s'}) must not be longer than the sync period (${s.syncPeriod ?? '30s'})`);
  }

  const masqueradeBit = s.masqueradeBit ?? defaults.masqueradeBit;
  if (!Number.isInteger(masqueradeBit) || masqueradeBit < 0 || masqueradeBit > 31) problems.push(`${w('masqueradeBit', 'masquerade bit')}: ${masqueradeBit} is not in 0-31`);

  const metricsBindAddress = bindAddress(s.metricsBindAddress ?? defaults.metricsBindAddress, defaults.metricsPort, w('metricsBindAddress', 'metrics bind address'), problems);
  const healthzBindAddress = bindAddress(s.healthzBindAddress ?? defaults.healthzBindAddress, defaults.healthzPort, w('healthzBindAddress', 'healthz bind address'), problems);

  // log level: --log-level wins over --v / logging.verbosity
  let logLevel: string | undefined;
  if (s.verbosity !== undefined) {
    if (s.verbosity < 0) problems.push(`${w('verbosity', 'verbosity')}: ${s.verbosity} must not be negative`);
    logLevel = s.verbosity >= 5 ? 'trace' : s.verbosity >= 2 ? 'debug' : 'info';
  }
  const level = str('log-level');
  if (level !== undefined) {
    if (!logLevels.includes(level)) problems.push(`--log-level: "${level}" is unknown (known: ${logLevels.join(', ')})`);
    else logLevel = level;
  }

  const sourceFile = str('source-file');
  if (sourceFile !== undefined) {
    const why = unreadable(sourceFile);
    if (why) problems.push(`--source-file: ${sourceFile}: ${why}`);
  }
  if (s.kubeconfig !== undefined && s.kubeconfig !== '') {
    const why = unreadable(s.kubeconfig);
    if (why) problems.push(`${w('kubeconfig', 'kubeconfig')}: ${s.kubeconfig}: ${why}`);
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({
    command,
    mode: mode as ProxyMode,
    kubeconfig: s.kubeconfig || undefined,
    nodeName,
    clusterCIDRs: Object.freeze(clusterCIDRs),
    masqueradeAll: s.masqueradeAll ?? false,
    masqueradeBit,
    nodePortAddresses: Object.freeze(nodePortAddresses),
    nodePortPrimary,
    externalIPCIDRs: Object.freeze(externalIPCIDRs),
    syncPeriodMs: syncPeriodMs!,
    minSyncPeriodMs: minSyncPeriodMs!,
    modeSettings: Object.freeze(settings.values),
    metricsBindAddress: metricsBindAddress === null ? null : Object.freeze(metricsBindAddress!),
    healthzBindAddress: healthzBindAddress === null ? null : Object.freeze(healthzBindAddress!),
    logLevel,
    sourceFile,
    live: v.get('live') === true,
    target,
  });
}

function duration(text: string | undefined, dflt: number, what: string, problems: string[], zeroOk: boolean): number | undefined {
  if (text === undefined) return dflt;
  const ms = parseDuration(text);
  if (ms === undefined) {
    problems.push(`${what}: "${text}" is not a duration (e.g. 30s, 1m, 500ms)`);
    return undefined;
  }
  if (ms === 0 && !zeroOk) {
    problems.push(`${what}: must be greater than 0`);
    return undefined;
  }
  return ms;
}

function bindAddress(text: string, port: number, what: string, problems: string[]): BindAddress | null | undefined {
  // Empty disables the server (kube-proxy); "0" is the old port-0 spelling of the same.
  if (text === '' || text === '0') return null;
  const r = parseBindAddress(text, port);
  if (typeof r === 'string') {
    problems.push(`${what}: "${text}": ${r}`);
    return undefined;
  }
  return r;
}

function unreadable(path: string): string | undefined {
  try {
    if (!statSync(path).isFile()) return 'not a regular file';
    // Opening proves it readable; the source file may be large, and its reader reads it anyway.
    closeSync(openSync(path, 'r'));
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
  }
}

// ---- KubeProxyConfiguration file ----

// Fields kproxy reads, with their expected YAML type.
type FieldType = 'string' | 'bool' | 'int' | 'stringList' | 'duration' | 'durationList';
/** Fields of every mode's block (kube-proxy's iptables and nftables blocks have them). */
const commonBlockFields = ['masqueradeAll', 'masqueradeBit', 'syncPeriod', 'minSyncPeriod'] as const;
const commonBlockTypes: Record<(typeof commonBlockFields)[number], FieldType> = {
  masqueradeAll: 'bool', masqueradeBit: 'int', syncPeriod: 'duration', minSyncPeriod: 'duration',
};
const usedFields: Record<string, FieldType> = {
  mode: 'string',
  'clientConnection.kubeconfig': 'string',
  hostnameOverride: 'string',
  clusterCIDR: 'string',
  healthzBindAddress: 'string',
  metricsBindAddress: 'string',
  nodePortAddresses: 'stringList',
  'logging.verbosity': 'int',
};
// Every mode's block: the common fields and the fields of its own settings.
for (const m of modes) {
  for (const f of commonBlockFields) usedFields[`${m.configBlock}.${f}`] = commonBlockTypes[f];
  for (const st of m.settings) if (st.field) usedFields[`${m.configBlock}.${st.field}`] = st.kind;
  // kube-proxy's top-level place for a setting (e.g. udpIdleTimeout).
  for (const st of m.settings) if (st.rootField) usedFields[st.rootField] = st.kind;
}
/** "block.field" of a mode setting → the mode's block, for the file reader. */
const settingFields = new Set(modes.flatMap((m) => m.settings.flatMap((st) => [
  ...(st.field ? [`${m.configBlock}.${st.field}`] : []), ...(st.rootField ? [st.rootField] : []),
])));
// KubeProxyConfiguration fields kproxy accepts and does not use (anything below them is accepted).
const ignoredFields = new Set([
  'apiVersion', 'kind', 'bindAddress', 'bindAddressHardFail', 'configSyncPeriod', 'conntrack', 'detectLocal',
  'detectLocalMode', 'enableProfiling', 'featureGates', 'oomScoreAdj', 'portRange', 'showHiddenMetricsForVersion',
  'udpIdleTimeout', 'winkernel', 'clientConnection.acceptContentTypes', 'clientConnection.contentType',
  'clientConnection.qps', 'clientConnection.burst', 'iptables.localhostNodePorts', 'nftables.localhostNodePorts',
  'logging.format', 'logging.flushFrequency', 'logging.options',
  'syncPeriod', 'minSyncPeriod', 'logging.vmodule',
]);
const blocks = new Set(['clientConnection', 'iptables', 'nftables', 'ipvs', 'logging', ...modes.map((m) => m.configBlock)]);

/** Reads the file into `out`; returns the problems found, each with its line number. */
function readConfigFile(path: string, out: RawSettings): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return [`config file ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`];
  }
  return parseConfigText(text, path, out);
}

/** Exported for tests: parses KubeProxyConfiguration YAML text into raw settings. */
export function parseConfigText(text: string, path: string, out: RawSettings): string[] {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true }) as Document;
  const problems: string[] = [];
  const at = (node: YamlNode | null | undefined): string => {
    const off = node?.range?.[0];
    return off === undefined ? path : `${path}:${lc.linePos(off).line}`;
  };
  for (const e of doc.errors) {
    problems.push(`${path}:${lc.linePos(e.pos[0]).line}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  if (doc.errors.length > 0) return problems;
  const root = doc.contents;
  if (!isMap(root)) return [`${path}: expected a KubeProxyConfiguration mapping`];

  const apiVersion = doc.get('apiVersion');
  const kind = doc.get('kind');
  if (apiVersion !== 'kubeproxy.config.k8s.io/v1alpha1') {
    problems.push(`${at(doc.get('apiVersion', true) as YamlNode)}: apiVersion must be kubeproxy.config.k8s.io/v1alpha1, got ${JSON.stringify(apiVersion ?? null)}`);
  }
  if (kind !== 'KubeProxyConfiguration') {
    problems.push(`${at(doc.get('kind', true) as YamlNode)}: kind must be KubeProxyConfiguration, got ${JSON.stringify(kind ?? null)}`);
  }

  const values = new Map<string, unknown>();
  const lines = new Map<string, string>();
  const walk = (map: YamlNode, prefix: string): void => {
    if (!isMap(map)) return;
    for (const pair of map.items) {
      const keyNode = pair.key as YamlNode;
      const key = isScalar(keyNode) ? String(keyNode.value) : '?';
      const path2 = prefix ? `${prefix}.${key}` : key;
      const valueNode = pair.value as YamlNode | null;
      if (!prefix && blocks.has(key)) {
        if (valueNode !== null && isScalar(valueNode) && valueNode.value === null) continue;
        if (!isMap(valueNode)) {
          problems.push(`${at(valueNode ?? keyNode)}: ${key} must be a mapping`);
          continue;
        }
        walk(valueNode, key);
        continue;
      }
      if (ignoredFields.has(path2) && !settingFields.has(path2)) continue;
      const type = usedFields[path2];
      if (type === undefined) {
        problems.push(`${at(keyNode)}: unknown field "${path2}"`);
        continue;
      }
      const val = checkType(valueNode, type);
      if (typeof val === 'object' && val !== null && 'problem' in val) problems.push(`${at(valueNode ?? keyNode)}: ${path2}: ${val.problem}`);
      else if (val !== undefined) {
        values.set(path2, val);
        lines.set(path2, at(valueNode ?? keyNode));
      }
    }
  };
  walk(root, '');

  const where: Record<string, string> = {};
  const get = <T>(k: string, setting: string): T | undefined => {
    if (values.has(k)) where[setting] = `${lines.get(k)}: ${k}`;
    return values.get(k) as T | undefined;
  };
  out.mode = get('mode', 'mode');
  out.kubeconfig = get('clientConnection.kubeconfig', 'kubeconfig');
  out.hostnameOverride = get('hostnameOverride', 'hostnameOverride');
  out.clusterCIDR = get('clusterCIDR', 'clusterCIDR');
  out.healthzBindAddress = get('healthzBindAddress', 'healthzBindAddress');
  out.metricsBindAddress = get('metricsBindAddress', 'metricsBindAddress');
  out.nodePortAddresses = get('nodePortAddresses', 'nodePortAddresses');
  out.masqueradeAll = get('iptables.masqueradeAll', 'masqueradeAll');
  out.masqueradeBit = get('iptables.masqueradeBit', 'masqueradeBit');
  out.syncPeriod = get('iptables.syncPeriod', 'syncPeriod');
  out.minSyncPeriod = get('iptables.minSyncPeriod', 'minSyncPeriod');
  // Another mode's block with any of the common fields (chosen in loadConfig, once the mode is known).
  for (const m of modes) {
    const b = m.configBlock;
    if (b === 'iptables' || !commonBlockFields.some((f) => values.has(`${b}.${f}`))) continue;
    const block: RawSettings = { where: {} };
    for (const f of commonBlockFields) {
      if (!values.has(`${b}.${f}`)) continue;
      (block as Record<string, unknown>)[f] = values.get(`${b}.${f}`);
      block.where![f] = `${lines.get(`${b}.${f}`)}: ${b}.${f}`;
    }
    (out.blocks ??= {})[b] = block;
  }
  out.modeFields = new Map([...values].filter(([k]) => settingFields.has(k)).map(([k, value]) => [k, { value, where: `${lines.get(k)}: ${k}` }]));
  out.verbosity = get('logging.verbosity', 'verbosity');
  // kube-proxy's defaulting of the file: an empty bind address or a zero
  // period means "the default" there (only the flags can disable a server).
  const unsetZero = (r: RawSettings): void => {
    if (r.healthzBindAddress === '') r.healthzBindAddress = undefined;
    if (r.metricsBindAddress === '') r.metricsBindAddress = undefined;
    if (r.syncPeriod !== undefined && parseDuration(r.syncPeriod) === 0) r.syncPeriod = undefined;
    if (r.minSyncPeriod !== undefined && parseDuration(r.minSyncPeriod) === 0) r.minSyncPeriod = undefined;
  };
  unsetZero(out);
  for (const block of Object.values(out.blocks ?? {})) unsetZero(block);
  for (const k of Object.keys(out) as (keyof RawSettings)[]) if (out[k] === undefined) delete out[k];
  out.where = where;
  return problems;
}

function checkType(node: YamlNode | null, type: FieldType): unknown {
  if (node === null || (isScalar(node) && node.value === null)) return undefined;
  if (type === 'stringList' || type === 'durationList') {
    // A list of durations may also be written as one comma-separated string, as on the command line.
    if (type === 'durationList' && isScalar(node) && typeof node.value === 'string') return node.value;
    if (!isSeq(node)) return { problem: type === 'stringList' ? 'expected a list of strings' : 'expected a list of durations such as [250ms, 1s]' };
    const items = node.items.map((i) => (isScalar(i) ? i.value : undefined));
    if (items.some((i) => typeof i !== 'string')) return { problem: type === 'stringList' ? 'expected a list of strings' : 'expected a list of durations such as [250ms, 1s]' };
    return items as string[];
  }
  if (!isScalar(node)) return { problem: `expected a ${type === 'bool' ? 'boolean' : type === 'int' ? 'integer' : 'string'}` };
  const val = node.value;
  switch (type) {
    case 'string':
      return typeof val === 'string' ? val : { problem: `expected a string, got ${JSON.stringify(val)}` };
    case 'bool':
      return typeof val === 'boolean' ? val : { problem: `expected true or false, got ${JSON.stringify(val)}` };
    case 'int':
      return typeof val === 'number' && Number.isInteger(val) ? val : { problem: `expected an integer, got ${JSON.stringify(val)}` };
    case 'duration':
      if (typeof val !== 'string' && val !== 0) return { problem: `expected a duration such as 30s, got ${JSON.stringify(val)}` };
      return String(val);
  }
}
