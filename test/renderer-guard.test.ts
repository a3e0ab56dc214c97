// Every renderer emits only text it has checked. Service ports that bypass
// the core's validation (a bug, or a future source) carrying hostile names
// or malformed values reach each mode's renderer directly here: the batch
// must hold nothing the renderer did not mean, the port is left out and
// reported when a value cannot be written, and every other Service keeps
// its rules.
import test from 'ava';
import { silentLogger } from '../lib/log.ts';
import type { Exec } from '../lib/exec.ts';
import type { ServicePortState } from '../proxy/model.ts';
import { modes } from '../modes/registry.ts';
import { wrapExec } from '../modes/fake.ts';
import { syncBackend } from '../modes/sync.ts';
import { fullChanges } from '../proxy/model.ts';
import { ep, nodeState, svc } from './helpers/state.ts';
import { nodeIP, options } from './fixtures/services.ts';

const injected = '-I PREROUTING 1 -p tcp -d 10.96.10.10 --dport 80 -j DNAT --to-destination 10.123.3.2:8080';
const web = svc({ name: 'shop/web:http', clusterIP: '10.96.0.10', port: 80, clusterEndpoints: [ep('10.244.2.12', 8080)] });
const hostile = (name: string, extra: Partial<ServicePortState> = {}): ServicePortState =>
  svc({ name, clusterIP: '10.96.9.9', port: 80, nodePort: 30099, clusterEndpoints: [ep('10.244.9.9', 8080)], ...extra });

/** Names no validated object can have: they must still never become syntax. */
const names: [string, string][] = [
  ['a port name with a line break and iptables syntax', `shop/evil:x"\n${injected}\n#`],
  ['a line break and a rule that drops everything', 'shop/evil:x\n-A INPUT -j DROP'],
  ['a namespace with a space and braces', 'shop front{;}/evil:http'],
  ['quotes, @, #, ;, $ and a backslash', 'shop/e"v@i#l;$\\:http'],
  ['non-ASCII text', 'dépôt/évil:http'],
  ['300 characters', `shop/${'e'.repeat(300)}:http`],
];

/** Values no validated object can have: the port is left out. */
const values: [string, Partial<ServicePortState>][] = [
  ['a cluster IP that is no address', { clusterIP: '10.96.9.300' }],
  ['an externalIP with a line break', { externalIPs: [`203.0.113.9\n${injected}`] }],
  ['an endpoint address of the other family', { clusterEndpoints: [ep('fd00::9', 8080)] }],
  ['a source range that is no CIDR', { loadBalancerIPs: ['198.51.100.99'], loadBalancerSourceRanges: ['192.0.2.0/24; drop'] }],
];

function recording(exec: Exec): { exec: Exec; inputs: string[] } {
  const inputs: string[] = [];
  return { inputs, exec: wrapExec(exec, async (inner, tool, args, input) => { if (input) inputs.push(input); return inner(tool, args, input); }) };
}

for (const mode of modes) {
  for (const [what, name] of names) {
    test(`${mode.name}: ${what}: written safely or left out, the other Services unharmed`, async (t) => {
      const fake = mode.fake({ localAddresses: [nodeIP] });
      const rec = recording(fake.exec);
      const bad = hostile(name);
      const state = nodeState([web, bad]);
      const r = await syncBackend(mode.create({ ...options(), exec: rec.exec }, silentLogger()), state, fullChanges(state));
      t.true(r.ok, r.error?.message);
      const text = rec.inputs.join('\n');
      t.false(text.includes('10.123.3.2'), 'no injected rule');
      t.false(/^-A INPUT -j DROP$/m.test(text), 'no injected rule');
      t.false(/[^\x20-\x7e\n\t]/.test(text), 'nothing but printable ASCII');
      t.deepEqual(fake.trace({ family: 4, src: '10.244.2.200', dst: '10.96.0.10', dport: 80, protocol: 'TCP', from: 'pod' })
        .map((o) => o.endpoint), ['10.244.2.12:8080'], 'the other Service still works');
      const outcome = fake.trace({ family: 4, src: '10.244.2.200', dst: '10.96.9.9', dport: 80, protocol: 'TCP', from: 'pod' });
      const refused = (r.refused ?? []).some((x) => x.key === bad.key);
      // Either its rules are there (its name written only as data) or it is left out and reported.
      if (!refused) t.deepEqual(outcome.map((o) => o.endpoint), ['10.244.9.9:8080']);
      else t.deepEqual(outcome.map((o) => o.verdict), ['accept']);
    });
  }
  for (const [what, extra] of values) {
    test(`${mode.name}: ${what}: the port is left out and reported, the batch still applies`, async (t) => {
      const fake = mode.fake({ localAddresses: [nodeIP] });
      const rec = recording(fake.exec);
      const bad = hostile('shop/evil:http', extra);
      const state = nodeState([web, bad]);
      const r = await syncBackend(mode.create({ ...options(), exec: rec.exec }, silentLogger()), state, fullChanges(state));
      t.true(r.ok, r.error?.message);
      t.deepEqual(r.refused?.map((x) => x.key), [bad.key]);
      t.false(rec.inputs.join('\n').includes('10.123.3.2'), 'no injected rule');
      t.false(rec.inputs.join('\n').includes('10.96.9.'), 'nothing of the refused port');
      t.deepEqual(fake.trace({ family: 4, src: '10.244.2.200', dst: '10.96.0.10', dport: 80, protocol: 'TCP', from: 'pod' })
        .map((o) => o.endpoint), ['10.244.2.12:8080'], 'the other Service still works');
    });
  }
}
