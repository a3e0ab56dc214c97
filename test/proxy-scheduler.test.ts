// The scheduler a Service asks for by annotation, kproxy's or kube-router's,
// checked once in the core and carried on its service ports.
import test from 'ava';
import { schedulerChoice } from '../proxy/scheduler.ts';
import type { InvalidObject } from '../proxy/tracker-api.ts';
import { Tracker } from '../proxy/tracker.ts';
import { silentLogger } from '../lib/log.ts';
import { service, upserts } from './fixtures/proxy/objects.ts';

const withAnnotations = (annotations: Record<string, string>) =>
  service('web', { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }, { annotations });

test('kproxy\'s annotation, with flags', (t) => {
  const problems: string[] = [];
  t.deepEqual(schedulerChoice(withAnnotations({ 'kproxy.io/scheduler': 'mh', 'kproxy.io/scheduler-flags': 'port, fallback' }), problems), { name: 'mh', flags: ['fallback', 'port'] });
  t.deepEqual(problems, []);
});

test('kube-router\'s annotations mean the same', (t) => {
  const problems: string[] = [];
  t.deepEqual(schedulerChoice(withAnnotations({ 'kube-router.io/service.scheduler': 'sh', 'kube-router.io/service.schedflags': 'flag-1,flag-2' }), problems), { name: 'sh', flags: ['fallback', 'port'] });
  t.deepEqual(problems, []);
});

test('no annotation: the node\'s default', (t) => {
  t.is(schedulerChoice(withAnnotations({}), []), undefined);
});

test('an unknown scheduler or flag is reported; the scheduler falls back to the default, a bad flag is left out', (t) => {
  const problems: string[] = [];
  t.is(schedulerChoice(withAnnotations({ 'kproxy.io/scheduler': 'rr -b x\n-A' }), problems), undefined);
  t.deepEqual(schedulerChoice(withAnnotations({ 'kproxy.io/scheduler': 'lc', 'kproxy.io/scheduler-flags': 'fallback,turbo' }), problems), { name: 'lc', flags: ['fallback'] });
  t.deepEqual(problems, [
    'annotation kproxy.io/scheduler: "rr -b x\\n-A" is not a scheduler (known: rr, wrr, lc, wlc, sh, dh, sed, nq, mh, p2c); the node\'s default applies',
    'annotation kproxy.io/scheduler-flags: "turbo" is not a scheduler flag (known: fallback, port, or kube-router\'s flag-1, flag-2); left out',
  ]);
});

test('the tracker carries the choice on every port, reports a bad annotation, and a change of scheduler is a change', (t) => {
  const reports: InvalidObject[] = [];
  const tr = new Tracker({ nodeName: 'node-a', families: [4], onInvalid: (r) => reports.push(r) }, silentLogger());
  for (const e of upserts(withAnnotations({ 'kproxy.io/scheduler': 'lc' }))) tr.apply(e);
  t.deepEqual(tr.snapshot().state.services.get('4/default/web:http/TCP')?.scheduler, { name: 'lc', flags: [] });
  tr.apply(upserts(withAnnotations({ 'kproxy.io/scheduler': 'fastest' }))[0]);
  const { state, changes } = tr.snapshot();
  t.is(state.services.get('4/default/web:http/TCP')?.scheduler, undefined);
  t.true(changes.services.has('4/default/web:http/TCP'));
  t.deepEqual(reports.map((r) => [r.action, r.problems.length]), [['refuse', 1]]);
});
