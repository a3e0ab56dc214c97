// Service addresses as local addresses of the node: kproxy adds and removes
// only its own (marked by its metric), adopts what a previous kproxy left,
// and cleans up. The kernel part runs in a namespace the test creates.
import test from 'ava';
import { netnsExec } from '../lib/exec.ts';
import { silentLogger } from '../lib/log.ts';
import { ADDRESS_METRIC, addressBatch, parseOwned, ServiceAddresses } from '../modes/userspace/addresses.ts';
import { createNetns, deleteNetns, requireKernelPrerequisites } from './helpers/netns.ts';

test('the batch adds with the metric (IPv6 without duplicate detection) and removes what is no longer wanted', (t) => {
  t.deepEqual(addressBatch('lo', new Set(['10.96.0.1', '10.96.0.2']), new Set(['10.96.0.2', 'fd00::10'])), [
    'address del 10.96.0.1/32 dev lo',
    `address replace fd00::10/128 dev lo metric ${ADDRESS_METRIC} nodad`,
  ]);
  t.deepEqual(addressBatch('kproxy0', new Set(), new Set()), []);
});

test('only addresses with kproxy\'s metric are its own', (t) => {
  const listing = [
    '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever',
    `1: lo    inet 10.96.0.10/32 metric ${ADDRESS_METRIC} scope global lo\\       valid_lft forever preferred_lft forever`,
    '1: lo    inet 10.96.0.11/32 metric 77 scope global lo\\       valid_lft forever preferred_lft forever',
    `1: lo    inet6 fd00::10/128 metric ${ADDRESS_METRIC} scope global \\       valid_lft forever preferred_lft forever`,
  ].join('\n');
  t.deepEqual(parseOwned(listing), ['10.96.0.10', 'fd00::10']);
});

test.serial('in a namespace: add, keep the administrator\'s address, adopt after a restart, clean up', async (t) => {
  requireKernelPrerequisites([{ tool: 'ip', pkg: 'iproute2' }]);
  const ns = await createNetns('kpua');
  t.teardown(() => deleteNetns(ns));
  const exec = netnsExec(ns);
  await exec('ip', ['address', 'add', '10.96.0.99/32', 'dev', 'lo']);
  const a = new ServiceAddresses(exec, silentLogger());
  await a.setup();
  t.true(a.device === 'kproxy0' || a.device === 'lo', a.device);
  t.deepEqual(await a.sync(['10.96.0.10', '10.96.0.11', 'fd00::10', 'not-an-ip']), { added: 3, removed: 0 });
  const show = async () => (await exec('ip', ['-o', 'address', 'show'])).stdout;
  t.regex(await show(), /inet 10\.96\.0\.10\/32 metric 7717/);
  t.regex(await show(), /inet6 fd00::10\/128 metric 7717/);
  // A second kproxy adopts them and removes only what it does not want.
  const b = new ServiceAddresses(exec, silentLogger());
  await b.setup();
  t.deepEqual([...b.owned].sort(), ['10.96.0.10', '10.96.0.11', 'fd00::10']);
  t.deepEqual(await b.sync(['10.96.0.11']), { added: 0, removed: 2 });
  const after = await show();
  t.false(after.includes('10.96.0.10/32'));
  t.true(after.includes('10.96.0.11/32'));
  t.true(after.includes('10.96.0.99/32'), 'the administrator\'s address stays');
  await b.cleanup();
  const clean = await show();
  t.false(clean.includes('metric 7717'));
  t.true(clean.includes('10.96.0.99/32'));
});
