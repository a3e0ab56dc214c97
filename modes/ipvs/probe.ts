// Which IPVS schedulers this kernel can use, asked of the kernel itself in
// one `ipvsadm -R` run: a throw-away firewall-mark virtual service per
// scheduler (the kernel loads the scheduler's module on demand, or answers
// "Scheduler or persistence engine not found"), each followed by a line that
// always fails with "Service not defined", which tells which scheduler an
// error belongs to (ipvsadm -R names no line), then the services' deletion.
// Checked against the real kernel in user-mode-linux.
import { KproxyError } from '../../lib/errors.ts';
import { ToolError, type Exec } from '../../lib/exec.ts';
import type { Scheduler } from './ipvsadm.ts';
import { fwmarkOf, maxFwmarkId } from './names.ts';

const notFound = /Scheduler or persistence engine not found/;
const separator = /Service not defined/;

/** Marks of the probe services: the top of kproxy's mark range, which Services never get in practice. */
function probeMarks(count: number, masqueradeBit: number): number[] {
  return Array.from({ length: count + 1 }, (_, i) => fwmarkOf(maxFwmarkId() - i, masqueradeBit));
}

export function probeBatch(names: readonly Scheduler[], masqueradeBit: number): string {
  const marks = probeMarks(names.length, masqueradeBit);
  const never = marks[names.length];
  const lines: string[] = [];
  names.forEach((s, i) => {
    lines.push(`-A -f ${marks[i]} -s ${s}`);
    lines.push(`-a -f ${never} -r 10.255.255.254:1 -m -w 1`);
  });
  names.forEach((_, i) => lines.push(`-D -f ${marks[i]}`));
  return `${lines.join('\n')}\n`;
}

/** The schedulers whose probe failed, from the run's stderr. */
export function missingFromProbe(names: readonly Scheduler[], stderr: string): Set<Scheduler> {
  const missing = new Set<Scheduler>();
  let k = 0;
  for (const line of stderr.split('\n')) {
    if (k >= names.length) break;
    if (separator.test(line)) k++;
    else if (notFound.test(line)) missing.add(names[k]);
  }
  if (k < names.length) {
    throw new KproxyError('KPROXY_KERNEL_MISSING', `ipvsadm did not answer the scheduler probe as expected: ${stderr.trim().slice(0, 300)}`);
  }
  return missing;
}

/** Asks the kernel which of `names` it lacks. */
export async function missingSchedulers(exec: Exec, names: readonly Scheduler[], masqueradeBit: number): Promise<Set<Scheduler>> {
  if (names.length === 0) return new Set();
  let stderr: string;
  try {
    stderr = (await exec('ipvsadm', ['-R'], probeBatch(names, masqueradeBit))).stderr;
  } catch (e) {
    // ipvsadm -R exits with the status of its last line: a failed deletion is expected here.
    if (!(e instanceof ToolError)) throw e;
    stderr = e.stderr;
  }
  return missingFromProbe(names, stderr);
}
