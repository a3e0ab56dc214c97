// A mode's own settings (its descriptor's `settings`): flag over file over
// default, parsed by kind, validated for every mode (a typo in another
// mode's flag is still a typo), handed on for the chosen mode only, and able
// to stand for a node-wide period in that mode.
import test from 'ava';
import type { ModeDescriptor, ModeSetting } from '../modes/backend.ts';
import { modes } from '../modes/registry.ts';
import { modeSettings } from '../proxy/mode-settings.ts';

const settings: ModeSetting[] = [
  { key: 'scheduler', flag: 'demo-scheduler', field: 'scheduler', kind: 'string', default: 'rr', help: 'scheduler', validate: (v) => (['rr', 'lc'].includes(v as string) ? undefined : `"${String(v)}" is unknown (known: rr, lc)`) },
  { key: 'syncPeriod', flag: 'demo-sync-period', field: 'syncPeriod2', kind: 'duration', default: 30_000, help: 'period', replaces: 'syncPeriod' },
  { key: 'exclude', flag: 'demo-exclude', field: 'exclude', kind: 'stringList', default: [], help: 'CIDRs' },
  { key: 'strict', flag: 'demo-strict', field: 'strict', kind: 'bool', default: false, help: 'strict' },
];
const demo = { ...modes[0], name: 'demo', configBlock: 'demo', settings } as ModeDescriptor;
const other = { ...modes[0], name: 'other', configBlock: 'other', settings: [{ ...settings[0], flag: 'other-scheduler', field: 'scheduler' }] } as ModeDescriptor;
const registry = [demo, other];

test('defaults when neither the flag nor the file sets a value', (t) => {
  const problems: string[] = [];
  const r = modeSettings('demo', new Map(), new Map(), problems, registry);
  t.deepEqual(problems, []);
  t.deepEqual(r.values, { scheduler: 'rr', syncPeriod: 30_000, exclude: [], strict: false });
  t.deepEqual(r.replaced, {});
});

test('the flag wins over the file; values are parsed by kind', (t) => {
  const problems: string[] = [];
  const file = new Map<string, { value: unknown; where: string }>([
    ['demo.scheduler', { value: 'rr', where: 'c.yaml:4: demo.scheduler' }],
    ['demo.exclude', { value: ['10.0.0.0/8'], where: 'c.yaml:5: demo.exclude' }],
  ]);
  const r = modeSettings('demo', new Map<string, unknown>([['demo-scheduler', 'lc'], ['demo-sync-period', '45s'], ['demo-strict', true]]), file, problems, registry);
  t.deepEqual(problems, []);
  t.deepEqual(r.values, { scheduler: 'lc', syncPeriod: 45_000, exclude: ['10.0.0.0/8'], strict: true });
  t.deepEqual(r.replaced, { syncPeriod: ['45s', '--demo-sync-period'] });
});

test('every problem is reported with where it came from, another mode\'s flags included', (t) => {
  const problems: string[] = [];
  const file = new Map([['demo.scheduler', { value: 'fastest', where: 'c.yaml:4: demo.scheduler' }]]);
  const r = modeSettings('demo', new Map<string, unknown>([['demo-sync-period', 'soon'], ['other-scheduler', 'xx']]), file, problems, registry);
  t.deepEqual(problems, [
    'c.yaml:4: demo.scheduler: "fastest" is unknown (known: rr, lc)',
    '--demo-sync-period: "soon" is not a duration (e.g. 30s, 1m, 500ms)',
    '--other-scheduler: "xx" is unknown (known: rr, lc)',
  ]);
  t.false('scheduler' in r.values && r.values.scheduler !== 'rr', 'a bad value leaves the default');
  t.deepEqual(Object.keys(r.values).sort(), ['exclude', 'scheduler', 'strict', 'syncPeriod'], 'only the chosen mode\'s settings');
});
