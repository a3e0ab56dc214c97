// Runs a kernel tool with one batch on stdin. Typed errors carry the tool's
// stderr and exit code so a failed sync can be logged and retried.
import { spawn } from 'node:child_process';
import { KproxyError } from './errors.ts';

export class ToolError extends KproxyError {
  readonly tool: string;
  readonly args: readonly string[];
  /** The tool's exit status (null when it could not be started). */
  readonly status: number | null;
  readonly stderr: string;
  constructor(tool: string, args: readonly string[], exitCode: number | null, stderr: string) {
    super('KPROXY_TOOL_FAILED', `${tool} ${args.join(' ')} failed (exit ${exitCode}): ${stderr.trim().slice(0, 2000)}`);
    this.name = 'ToolError';
    this.tool = tool;
    this.args = args;
    this.status = exitCode;
    this.stderr = stderr;
  }
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `tool args` with `input` on stdin; rejects with ToolError on a non-zero exit. */
export type Exec = (tool: string, args: readonly string[], input?: string) => Promise<ExecResult>;

// Kernel tools are called by absolute path: inside npm scripts
// node_modules/.bin holds an unrelated `nft` that would shadow nftables'.
const systemDirs = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
import { accessSync, constants } from 'node:fs';

export function toolPath(tool: string): string {
  if (tool.startsWith('/')) return tool;
  for (const dir of systemDirs) {
    const p = `${dir}/${tool}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // try the next directory
    }
  }
  return `/usr/sbin/${tool}`;
}

function run(argv0: string, argv: readonly string[], tool: string, args: readonly string[], input?: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv0, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new ToolError(tool, args, null, String(e))));
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) resolve({ stdout, stderr });
      else reject(new ToolError(tool, args, code, stderr || stdout));
    });
    child.stdin.on('error', () => { /* reported through close */ });
    child.stdin.end(input ?? '');
  });
}

/** Runs tools on this host's own network namespace. */
export const hostExec: Exec = (tool, args, input) => run(toolPath(tool), args, tool, args, input);

/** Runs tools inside network namespace `ns` (tests, demo). */
export function netnsExec(ns: string): Exec {
  return (tool, args, input) => run(toolPath('ip'), ['netns', 'exec', ns, toolPath(tool), ...args], tool, args, input);
}
