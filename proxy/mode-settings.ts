// The modes' own settings (modes/<mode>/mode.ts `settings`): each a flag
// and/or a field of the mode's KubeProxyConfiguration block, parsed and
// checked here for every mode, so a typo in another mode's flag is reported
// too; only the chosen mode's values go on to its backend.
import { modes } from '../modes/registry.ts';
import type { ModeDescriptor, ModeSetting } from '../modes/backend.ts';
import { parseDuration, splitList } from './flags.ts';

export interface ResolvedSettings {
  /** The chosen mode's settings by key, defaults filled in. */
  readonly values: Record<string, unknown>;
  /** Node-wide settings the chosen mode's own flags or fields replace: [value as written, where]. */
  readonly replaced: Partial<Record<'syncPeriod' | 'minSyncPeriod', [string, string]>>;
}

function parse(s: ModeSetting, raw: unknown): { value: unknown } | { problem: string } {
  switch (s.kind) {
    case 'duration': {
      const ms = typeof raw === 'string' ? parseDuration(raw) : undefined;
      return ms === undefined ? { problem: `"${String(raw)}" is not a duration (e.g. 30s, 1m, 500ms)` } : { value: ms };
    }
    case 'stringList':
      return { value: typeof raw === 'string' ? splitList(raw) : raw };
    case 'durationList': {
      const items = typeof raw === 'string' ? splitList(raw) : Array.isArray(raw) ? raw.map(String) : [];
      const ms = items.map((d) => parseDuration(d));
      const bad = items.filter((_, i) => ms[i] === undefined);
      if (items.length === 0 || bad.length > 0) return { problem: `"${bad.join(', ') || String(raw)}" is not a list of durations (e.g. 250ms,500ms,1s)` };
      return { value: ms };
    }
    default:
      return { value: raw };
  }
}

export function modeSettings(
  mode: string, flags: ReadonlyMap<string, unknown>, fileFields: ReadonlyMap<string, { value: unknown; where: string }>, problems: string[],
  registry: readonly ModeDescriptor[] = modes,
): ResolvedSettings {
  const values: Record<string, unknown> = {};
  const replaced: ResolvedSettings['replaced'] = {};
  for (const m of registry) {
    for (const s of m.settings) {
      const fromFlag = s.flag !== undefined && flags.has(s.flag) ? { value: flags.get(s.flag), where: `--${s.flag}` } : undefined;
      const given = fromFlag ?? (s.field !== undefined ? fileFields.get(`${m.configBlock}.${s.field}`) : undefined) ??
        (s.rootField !== undefined ? fileFields.get(s.rootField) : undefined);
      let value = s.default;
      if (given) {
        const p = parse(s, given.value);
        const problem = 'problem' in p ? p.problem : s.validate?.(p.value);
        if (problem !== undefined) problems.push(`${given.where}: ${problem}`);
        else value = (p as { value: unknown }).value;
        if (m.name === mode && s.replaces && problem === undefined) replaced[s.replaces] = [String(given.value), given.where];
      }
      if (m.name === mode) values[s.key] = value;
    }
  }
  return { values, replaced };
}
