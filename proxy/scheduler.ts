// The load-balancing algorithm a Service asks for, by annotation: kproxy's
// own (kproxy.io/scheduler, kproxy.io/scheduler-flags) or kube-router's
// (kube-router.io/service.scheduler, kube-router.io/service.schedflags), so
// kube-router users can move over. Read and checked here once; the ipvs
// and userspace modes give the same annotation the same meaning, each
// falling back to its default (and saying so) for an algorithm it lacks.
import type { V1Service } from '@kubernetes/client-node';

export const schedulerAnnotation = 'kproxy.io/scheduler';
export const schedulerFlagsAnnotation = 'kproxy.io/scheduler-flags';
export const kubeRouterSchedulerAnnotation = 'kube-router.io/service.scheduler';
export const kubeRouterFlagsAnnotation = 'kube-router.io/service.schedflags';

/**
 * IPVS's schedulers (rr wrr lc wlc sh dh sed nq mh) and the userspace
 * forwarder's power-of-two-choices (p2c).
 */
export const schedulerNames = ['rr', 'wrr', 'lc', 'wlc', 'sh', 'dh', 'sed', 'nq', 'mh', 'p2c'] as const;
export type SchedulerName = (typeof schedulerNames)[number];

/** 'fallback': skip a drained endpoint instead of refusing; 'port': hash the source port too (sh, mh). */
export const schedulerFlagNames = ['fallback', 'port'] as const;
export type SchedulerFlag = (typeof schedulerFlagNames)[number];

export interface SchedulerChoice {
  readonly name: SchedulerName;
  readonly flags: readonly SchedulerFlag[];
}

/** kube-router's flag-N spelling of IPVS's scheduler flags (flag-1 fallback, flag-2 port). */
const kubeRouterFlags: Readonly<Record<string, SchedulerFlag>> = { 'flag-1': 'fallback', 'flag-2': 'port' };

/**
 * The Service's choice, or undefined when it makes none (the node's
 * --ipvs-scheduler applies). Problems with the annotations are pushed to
 * `problems`; a bad annotation counts as no choice.
 */
export function schedulerChoice(svc: V1Service, problems: string[]): SchedulerChoice | undefined {
  const a = svc.metadata?.annotations ?? {};
  const own = a[schedulerAnnotation] !== undefined;
  const nameKey = own ? schedulerAnnotation : kubeRouterSchedulerAnnotation;
  const flagsKey = own ? schedulerFlagsAnnotation : kubeRouterFlagsAnnotation;
  const raw = a[nameKey];
  if (raw === undefined) return undefined;
  const name = raw.trim();
  if (!(schedulerNames as readonly string[]).includes(name)) {
    problems.push(`annotation ${nameKey}: ${JSON.stringify(raw.slice(0, 40))} is not a scheduler (known: ${schedulerNames.join(', ')}); the node's default applies`);
    return undefined;
  }
  const flags: SchedulerFlag[] = [];
  for (const item of (a[flagsKey] ?? '').split(',').map((f) => f.trim()).filter(Boolean)) {
    const flag = (schedulerFlagNames as readonly string[]).includes(item) ? item as SchedulerFlag : kubeRouterFlags[item];
    if (!flag) {
      problems.push(`annotation ${flagsKey}: ${JSON.stringify(item.slice(0, 40))} is not a scheduler flag (known: ${schedulerFlagNames.join(', ')}, or kube-router's flag-1, flag-2); left out`);
      continue;
    }
    if (!flags.includes(flag)) flags.push(flag);
  }
  return { name: name as SchedulerName, flags: flags.sort() };
}

export function sameScheduler(a: SchedulerChoice | undefined, b: SchedulerChoice | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.name === b.name && a.flags.join() === b.flags.join());
}
