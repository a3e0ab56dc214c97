// Nothing is skipped without a word: FQDN EndpointSlices, slices of a family
// this node does not program, and a Service port no slice port matches are
// logged once (until the reasons change), and `explain` says why an
// endpoint or a Service port is not used, a refused claim or a skipped
// object included.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { explainCommand } from '../proxy/commands/explain.ts';
import { loadConfig } from '../proxy/config.ts';
import { silentLogger } from '../lib/log.ts';
import { endpoint, newTracker, recordingLogger, service, slice, upserts } from './fixtures/proxy/objects.ts';

const named = service('named', { clusterIP: '10.96.0.30', ports: [{ name: 'http', port: 80, targetPort: 'web' as never }] });
const wrongPort = slice('named', 'named-v4', [{ name: 'web', port: 8080 }], [endpoint('10.244.2.30')]);
const fqdn = slice('named', 'named-fqdn', [{ name: 'http', port: 8080 }], [{ addresses: ['db.example.com'] }], { addressType: 'FQDN' });
const v6 = slice('named', 'named-v6', [{ name: 'http', port: 8080 }], [endpoint('fd00::30')], { addressType: 'IPv6' });

test('the tracker says once why slices and ports of a Service give no endpoints', (t) => {
  const { log, records } = recordingLogger();
  const tr = newTracker({ families: [4], log });
  for (const e of upserts(named, wrongPort, fqdn, v6)) tr.apply(e);
  tr.snapshot();
  tr.requestFull();
  tr.apply(upserts(wrongPort)[0]);
  tr.snapshot();
  const notes = records.filter((r) => r.msg === 'endpoints not used');
  t.is(notes.length, 1, 'logged once');
  t.deepEqual(notes[0].notes, [
    'EndpointSlice named-fqdn lists FQDN addresses: no proxy forwards to names',
    'EndpointSlice named-v6 lists IPv6 endpoints: this node programs IPv4 only',
    'default/named:http (TCP, IPv4): no EndpointSlice port is named "http" with protocol TCP (the slices have: web/TCP)',
  ]);
  // Once the slice matches, that note goes (the reasons changed: logged); the mismatch back is logged again.
  tr.apply(upserts(slice('named', 'named-v4', [{ name: 'http', port: 8080 }], [endpoint('10.244.2.30')]))[0]);
  tr.snapshot();
  tr.apply(upserts(wrongPort)[0]);
  tr.snapshot();
  const all = records.filter((r) => r.msg === 'endpoints not used');
  t.deepEqual(all.map((r) => (r.notes as string[]).length), [3, 2, 3]);
});

test('explain says why an endpoint or a Service port is not used, a refusal or a skipped object included', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kproxy-notes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  const holder = service('holder', { clusterIP: '10.96.0.31', externalIPs: ['203.0.113.31'], ports: [{ name: 'http', port: 80 }] });
  holder.metadata!.creationTimestamp = '2024-01-01T00:00:00Z' as unknown as Date;
  const taker = service('taker', { clusterIP: '10.96.0.32', externalIPs: ['203.0.113.31'], ports: [{ name: 'http', port: 80 }] });
  taker.metadata!.creationTimestamp = '2025-01-01T00:00:00Z' as unknown as Date;
  const broken = service('broken', { clusterIP: '10.96.0.33', ports: [{ name: 'h ttp', port: 80 }] });
  const node = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.0.2' }] } };
  writeFileSync(file, [named, wrongPort, fqdn, v6, holder, taker, broken, node].map((o) => stringify(o)).join('---\n'));
  const run = async (target: string): Promise<string> => {
    let text = '';
    const config = loadConfig(['explain', '--source-file', file, '--hostname-override', 'node-a', target]);
    t.is(await explainCommand(config, silentLogger(), async (s) => { text += s; }), 0);
    return text;
  };
  const n = await run('default/named');
  t.regex(n, /not used: EndpointSlice named-fqdn lists FQDN addresses/);
  t.regex(n, /not used: EndpointSlice named-v6 lists IPv6 endpoints: this node programs IPv4 only/);
  t.regex(n, /not used: no EndpointSlice port is named "http" with protocol TCP \(the slices have: web\/TCP\)/);
  t.regex(await run('default/taker'), /refused: externalIP 203\.0\.113\.31:80\/TCP is already used by Service default\/holder/);
  const b = await run('default/broken');
  t.regex(b, /default\/broken: skipped by kproxy as malformed/);
  t.regex(b, /spec\.ports\[0\]\.name "h ttp" is not a DNS-1123 label/);
});
