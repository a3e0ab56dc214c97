// Entry point of the `kproxy` command: parses and validates flags once,
// then runs the proxy or one of the operator commands. The proxy's flags
// and config (and with them every registered mode) are loaded only for the
// proxy's own commands: `kproxy dns-cache` loads the DNS cache alone.
// First, before any module loads the Kubernetes client library: the hook
// that leaves the library's generated API classes and models out (a side
// effect of the import, so that warming the compile cache by importing this
// module and then the others compiles what the hook loads instead).
import './source/client-library.ts';
import type { ProxyConfig } from './config.ts';
import { exitCodeOf, formatError, KproxyError } from '../lib/errors.ts';
import { logger, setLogLevel, type Logger } from '../lib/log.ts';
import { stdoutOut, type Out } from './commands/output.ts';

async function dispatch(config: ProxyConfig, log: Logger, out: Out): Promise<number> {
  switch (config.command) {
    case 'run':
      return (await import('./main.ts')).runProxy(config, log);
    case 'cleanup':
      return (await import('./commands/cleanup.ts')).cleanupCommand(config, log);
    case 'dump':
      return (await import('./commands/dump.ts')).dumpCommand(config, log, out);
    case 'diff':
      return (await import('./commands/diff.ts')).diffCommand(config, log, out);
    case 'explain':
      return (await import('./commands/explain.ts')).explainCommand(config, log, out);
  }
}

/** Runs kproxy with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: readonly string[], out: Out = stdoutOut): Promise<number> {
  if (argv[0] === 'dns-cache') {
    const { runDnsCache } = await import('../dns-cache/main.ts');
    return runDnsCache(argv.slice(1));
  }
  if (argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    const { helpText } = await import('./flags.ts');
    await out(helpText());
    return 0;
  }
  const { loadConfig } = await import('./config.ts');
  let config: ProxyConfig;
  try {
    config = loadConfig(argv);
  } catch (err) {
    process.stderr.write(`${formatError(err)}\n`);
    return exitCodeOf(err);
  }
  const log = logger();
  if (config.logLevel !== undefined) setLogLevel(config.logLevel);
  try {
    return await dispatch(config, log, out);
  } catch (err) {
    // Catalogued errors are for the operator: one line. Anything else is a bug: log the stack too.
    if (!(err instanceof KproxyError)) log.error({ err }, 'unexpected error');
    process.stderr.write(`${formatError(err)}\n`);
    return exitCodeOf(err);
  }
}
