// Two Services claiming one address:port:protocol or one NodePort: the
// older (creationTimestamp, then namespace/name) keeps it, the other loses
// that claim on that port only, and is reported; a claim freed by its
// holder passes on at the next snapshot. --external-ip-cidrs refuses
// externalIPs outside the allowed ranges (CVE-2020-8554).
import test from 'ava';
import type { V1Service } from '@kubernetes/client-node';
import { silentLogger } from '../lib/log.ts';
import { Tracker } from '../proxy/tracker.ts';
import type { InvalidObject } from '../proxy/tracker-api.ts';
import { endpoint, service, slice, upserts } from './fixtures/proxy/objects.ts';
import { modeOf } from '../modes/registry.ts';
import { syncBackend } from '../modes/sync.ts';

const older = '2024-01-01T00:00:00Z';
const newer = '2025-06-01T00:00:00Z';

function svc(name: string, created: string | undefined, spec: V1Service['spec']): V1Service {
  const s = service(name, { clusterIP: '', ...spec });
  if (created) s.metadata!.creationTimestamp = created as unknown as Date;
  s.metadata!.uid = `uid-${name}`;
  s.metadata!.resourceVersion = '1';
  return s;
}

const victim = svc('victim', older, { type: 'NodePort', clusterIP: '10.96.0.10', externalIPs: ['203.0.113.10'], ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
const thief = svc('thief', newer, { type: 'NodePort', clusterIP: '10.96.0.66', externalIPs: ['203.0.113.10', '203.0.113.66'], ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
const victimEps = slice('victim', 'victim-1', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.10')]);
const thiefEps = slice('thief', 'thief-1', [{ name: 'http', port: 8080 }], [endpoint('10.244.6.66')]);

function tracker(reports: InvalidObject[] = [], externalIPCIDRs?: string[]): Tracker {
  return new Tracker({ nodeName: 'node-a', families: [4], onInvalid: (r) => reports.push(r), externalIPCIDRs }, silentLogger());
}

const port = (t: Tracker, name: string) => t.snapshot().state.services.get(`4/default/${name}:http/TCP`);

test('the older Service keeps a shared externalIP and NodePort; the newer loses only those, whatever the order of arrival', (t) => {
  for (const order of [[victim, victimEps, thief, thiefEps], [thief, thiefEps, victim, victimEps]]) {
    const reports: InvalidObject[] = [];
    const tr = tracker(reports);
    for (const e of upserts(...order)) tr.apply(e);
    const { state } = tr.snapshot();
    const v = state.services.get('4/default/victim:http/TCP')!;
    const th = state.services.get('4/default/thief:http/TCP')!;
    t.deepEqual(v.externalIPs, ['203.0.113.10']);
    t.is(v.nodePort, 30080);
    t.deepEqual(th.externalIPs, ['203.0.113.66'], 'the thief keeps its own address');
    t.is(th.nodePort, 0, 'and loses the NodePort');
    t.is(th.clusterIP, '10.96.0.66');
    t.deepEqual(reports.map((r) => [r.object.metadata?.name, r.action, [...r.problems].sort()]), [['thief', 'refuse', [
      'NodePort 30080/TCP is already used by Service default/victim',
      'externalIP 203.0.113.10:80/TCP is already used by Service default/victim',
    ]]]);
  }
});

test('the programmed NodePort leads to the older Service\'s endpoints only', async (t) => {
  const tr = tracker();
  for (const e of upserts(thief, thiefEps, victim, victimEps)) tr.apply(e);
  const { state, changes } = tr.snapshot();
  for (const mode of ['iptables', 'nftables']) {
    const m = modeOf(mode);
    const fake = m.fake({ localAddresses: ['192.168.0.2'] });
    const r = await syncBackend(m.create({ families: [4], clusterCIDRs: ['10.244.0.0/16'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14, exec: fake.exec }, silentLogger()), state, changes);
    t.true(r.ok, r.error?.message);
    const to = (dst: string, dport: number) => fake.trace({ family: 4, src: '198.18.0.9', dst, dport, protocol: 'TCP', from: 'outside' }).map((o) => o.endpoint);
    t.deepEqual(to('192.168.0.2', 30080), ['10.244.1.10:8080'], `${mode}: NodePort`);
    t.deepEqual(to('203.0.113.10', 80), ['10.244.1.10:8080'], `${mode}: the shared externalIP`);
    t.deepEqual(to('203.0.113.66', 80), ['10.244.6.66:8080'], `${mode}: the thief's own externalIP`);
  }
});

test('a claim freed by its holder passes on at the next snapshot', (t) => {
  const tr = tracker();
  for (const e of upserts(victim, victimEps, thief, thiefEps)) tr.apply(e);
  t.is(port(tr, 'thief')!.nodePort, 0);
  tr.apply({ kind: 'Service', type: 'delete', object: victim });
  const { state, changes } = tr.snapshot();
  t.is(state.services.get('4/default/thief:http/TCP')!.nodePort, 30080);
  t.deepEqual(state.services.get('4/default/thief:http/TCP')!.externalIPs, ['203.0.113.10', '203.0.113.66']);
  t.true(changes.services.has('4/default/thief:http/TCP'), 'the thief\'s port is in the changes');
});

test('a Service taking another\'s cluster IP:port loses that port; the older one never changes', (t) => {
  const reports: InvalidObject[] = [];
  const tr = tracker(reports);
  const shadow = svc('shadow', newer, { externalIPs: ['10.96.0.10'], clusterIP: '10.96.0.77', ports: [{ name: 'http', port: 80 }, { name: 'other', port: 81 }] });
  for (const e of upserts(victim, victimEps)) tr.apply(e);
  const before = port(tr, 'victim');
  tr.apply(upserts(shadow)[0]);
  const { state } = tr.snapshot();
  t.is(state.services.get('4/default/victim:http/TCP'), before, 'unchanged, same object');
  t.deepEqual(state.services.get('4/default/shadow:http/TCP')!.externalIPs, []);
  t.deepEqual(state.services.get('4/default/shadow:other/TCP')!.externalIPs, ['10.96.0.10'], 'port 81 of that address is free');
  t.deepEqual(reports.map((r) => r.problems), [['externalIP 10.96.0.10:80/TCP is already used by Service default/victim']]);
});

test('without creation times the claim goes by namespace/name', (t) => {
  const a = svc('a', undefined, { clusterIP: '10.96.0.1', externalIPs: ['203.0.113.1'], ports: [{ name: 'http', port: 80 }] });
  const b = svc('b', undefined, { clusterIP: '10.96.0.2', externalIPs: ['203.0.113.1'], ports: [{ name: 'http', port: 80 }] });
  const c = svc('c', older, { clusterIP: '10.96.0.3', externalIPs: ['203.0.113.1'], ports: [{ name: 'http', port: 80 }] });
  const tr = tracker();
  for (const e of upserts(b, a)) tr.apply(e);
  t.deepEqual(port(tr, 'a')!.externalIPs, ['203.0.113.1']);
  t.deepEqual(port(tr, 'b')!.externalIPs, []);
  tr.apply(upserts(c)[0]);
  const { state } = tr.snapshot();
  t.deepEqual(state.services.get('4/default/c:http/TCP')!.externalIPs, ['203.0.113.1'], 'a Service with a creation time ranks first');
  t.deepEqual(state.services.get('4/default/a:http/TCP')!.externalIPs, []);
});

test('--external-ip-cidrs refuses externalIPs outside the allowed ranges, and reports them once per version', (t) => {
  const reports: InvalidObject[] = [];
  const tr = tracker(reports, ['203.0.113.0/28']);
  const s = svc('ext', older, { clusterIP: '10.96.0.5', externalIPs: ['203.0.113.5', '198.51.100.5'], ports: [{ name: 'http', port: 80 }] });
  for (const e of upserts(s, s)) tr.apply(e);
  t.deepEqual(port(tr, 'ext')!.externalIPs, ['203.0.113.5']);
  tr.requestFull();
  tr.snapshot();
  t.deepEqual(reports.map((r) => r.problems), [['externalIP 198.51.100.5 is outside --external-ip-cidrs']]);
});
