// Whole-dump golden tests: the exact full-sync batch for each scenario.
// Set KPROXY_UPDATE_GOLDEN=1 to rewrite the files after a deliberate change
// (then review the diff: golden tests exist to catch accidental churn).
import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { silentLogger } from '../lib/log.ts';
import { scenarios, stateOf } from './fixtures/services.ts';

const dir = new URL('./fixtures/iptables/', import.meta.url);

for (const s of scenarios) {
  test(`full batch: ${s.id}`, (t) => {
    // Only the families the scenario's Services have: an empty ip6tables section says nothing.
    const families = [...new Set(s.services.map((p) => p.family))];
    const got = new IptablesBackend({ ...s.opts, families }, silentLogger()).render(stateOf(s));
    const file = new URL(`${s.id}.golden`, dir);
    if (process.env.KPROXY_UPDATE_GOLDEN === '1') writeFileSync(file, got);
    if (!existsSync(file)) return t.fail(`missing ${file.pathname}: run with KPROXY_UPDATE_GOLDEN=1 and review it`);
    t.is(got, readFileSync(file, 'utf8'));
  });
}

test('render is deterministic whatever the Services map order', (t) => {
  const s = scenarios.find((x) => x.id === 'multiple-ports')!;
  const state = stateOf(s);
  const reversed = { ...state, services: new Map([...state.services].reverse()) };
  const b = new IptablesBackend(s.opts, silentLogger());
  t.is(b.render(reversed), b.render(state));
});
