// A stand-in for `nft monitor` in fast tests: an Exec whose commands go to
// a fake kernel and whose long-lived tool is a script the test writes to,
// line by line, with process ids of its choosing.
import { ChildLog, type Exec, type StreamChild, type StreamExit, type StreamHandlers } from '../../lib/exec.ts';

export interface FakeStream {
  /** The Exec to hand a backend or monitor. */
  readonly exec: Exec;
  readonly children: ChildLog;
  /** How many times a tool was started on the stream. */
  readonly starts: number;
  /** Writes lines to the running tool's stdout (throws when none runs). */
  emit(...lines: string[]): void;
  /** Ends the running tool as if it had crashed. */
  crash(): void;
  /** Whether a tool runs now. */
  readonly running: boolean;
}

export function fakeStream(commands: Exec, opts: { pidBase?: number } = {}): FakeStream {
  const children = new ChildLog();
  let current: { handlers: StreamHandlers; end(e: StreamExit): void } | undefined;
  let starts = 0;
  let nextPid = opts.pidBase ?? 900_000;
  const stream = (_tool: string, _args: readonly string[], handlers: StreamHandlers): StreamChild => {
    starts++;
    let end!: (e: StreamExit) => void;
    const exited = new Promise<StreamExit>((r) => { end = r; });
    const me = { handlers, end };
    current = me;
    void exited.then(() => { if (current === me) current = undefined; });
    return {
      pid: nextPid++,
      exited,
      ready: Promise.resolve(),
      async stop() {
        end({ code: null, signal: 'SIGTERM' });
        return exited;
      },
    };
  };
  const exec = Object.assign((tool: string, args: readonly string[], input?: string) => commands(tool, args, input), { stream, children });
  return {
    exec, children,
    get starts() { return starts; },
    get running() { return current !== undefined; },
    emit(...lines) {
      if (!current) throw new Error('no monitor runs');
      for (const l of lines) current.handlers.onLine(l);
    },
    crash() {
      current?.end({ code: 1, signal: null });
    },
  };
}
