// Whole-dump golden tests: the exact full-sync batch for each scenario.
// Set KPROXY_UPDATE_GOLDEN=1 to rewrite the files after a deliberate change
// (then review the diff: golden tests exist to catch accidental churn).
import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { IptablesBackend } from '../modes/iptables/backend.ts';
import { silentLogger } from '../lib/log.ts';
import { scenarios } from './fixtures/iptables/scenarios.ts';

const dir = new URL('./fixtures/iptables/', import.meta.url);

for (const s of scenarios) {
  test(`full batch: ${s.name}`, (t) => {
    const got = new IptablesBackend(s.opts, silentLogger()).render(s.state);
    const file = new URL(`${s.name}.golden`, dir);
    if (process.env.KPROXY_UPDATE_GOLDEN === '1') writeFileSync(file, got);
    if (!existsSync(file)) return t.fail(`missing ${file.pathname}: run with KPROXY_UPDATE_GOLDEN=1 and review it`);
    t.is(got, readFileSync(file, 'utf8'));
  });
}

test('render is deterministic whatever the Services map order', (t) => {
  const s = scenarios.find((x) => x.name === 'multiple-ports')!;
  const reversed = { ...s.state, services: new Map([...s.state.services].reverse()) };
  const b = new IptablesBackend(s.opts, silentLogger());
  t.is(b.render(reversed), b.render(s.state));
});
