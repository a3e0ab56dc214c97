// Which environment runs each registered mode's kernel tests: network
// namespaces on the host when its kernel runs the mode (asked of the mode's
// descriptor, inside a scratch namespace), else a user-mode-linux guest
// (kernel-modes-uml.test.ts). Every mode lands in one of the two: none is
// skipped.
import { netnsExec } from '../../lib/exec.ts';
import { modes, type ProxyMode } from '../../modes/registry.ts';
import { createNetns, run } from '../helpers/netns.ts';
import { toolPath } from '../../lib/exec.ts';

export interface Placement {
  readonly host: readonly ProxyMode[];
  /** Modes the host kernel cannot run, with the reason. */
  readonly uml: readonly { readonly mode: ProxyMode; readonly why: string }[];
}

let placed: Promise<Placement> | undefined;

export function placement(): Promise<Placement> {
  placed ??= (async () => {
    const ns = await createNetns('kproxy-place');
    try {
      const host: ProxyMode[] = [];
      const uml: { mode: ProxyMode; why: string }[] = [];
      for (const m of modes) {
        const why = await m.unsupported?.(netnsExec(ns));
        if (why) uml.push({ mode: m.name, why });
        else host.push(m.name);
      }
      return { host, uml };
    } finally {
      await run(toolPath('ip'), ['netns', 'del', ns]).catch(() => undefined);
    }
  })();
  return placed;
}
