// Node set-up as NodeLocal DNSCache does it: the listen addresses on a
// dummy interface (on lo when the kernel has no dummy driver), and raw-table
// NOTRACK rules so DNS to and from them skips conntrack (no conntrack races
// or table exhaustion on UDP), plus filter ACCEPT rules. Teardown removes
// only what set-up added. Loopback addresses are left alone: they are on
// the node already and their traffic is never tracked by conntrack anyway.
import type { Logger } from '../lib/log.ts';
import { ToolError, type Exec } from '../lib/exec.ts';
import type { ListenAddress } from './config.ts';

const COMMENT = 'kproxy dns-cache';

export interface NodeSetupOptions {
  readonly interfaceName: string;
  readonly addresses: readonly ListenAddress[];
  readonly setupInterface: boolean;
  readonly setupIptables: boolean;
}

/** The rules for one listen address, as iptables arguments after the table. */
export function notrackRules(a: ListenAddress): Array<{ table: 'raw' | 'filter'; chain: string; spec: string[] }> {
  const out: Array<{ table: 'raw' | 'filter'; chain: string; spec: string[] }> = [];
  const ip = a.host;
  const port = String(a.port);
  for (const proto of ['udp', 'tcp']) {
    const tail = ['-m', 'comment', '--comment', COMMENT];
    out.push({ table: 'raw', chain: 'PREROUTING', spec: ['-p', proto, '-d', ip, '--dport', port, ...tail, '-j', 'NOTRACK'] });
    out.push({ table: 'raw', chain: 'OUTPUT', spec: ['-p', proto, '-s', ip, '--sport', port, ...tail, '-j', 'NOTRACK'] });
    out.push({ table: 'raw', chain: 'OUTPUT', spec: ['-p', proto, '-d', ip, '--dport', port, ...tail, '-j', 'NOTRACK'] });
    out.push({ table: 'filter', chain: 'INPUT', spec: ['-p', proto, '-d', ip, '--dport', port, ...tail, '-j', 'ACCEPT'] });
    out.push({ table: 'filter', chain: 'OUTPUT', spec: ['-p', proto, '-s', ip, '--sport', port, ...tail, '-j', 'ACCEPT'] });
  }
  return out;
}

function errText(e: unknown): string {
  return e instanceof ToolError ? e.stderr : String(e);
}

/** 127.0.0.0/8 and ::1 */
export function isLoopback(host: string): boolean {
  return host === '::1' || /^127\./.test(host);
}

export class NodeSetup {
  private readonly exec: Exec;
  private readonly opts: NodeSetupOptions;
  /** The listen addresses set-up handles (loopback ones left out). */
  private readonly addresses: readonly ListenAddress[];
  private readonly log: Logger;
  /** Where the addresses went: the dummy interface, or lo. */
  device = '';
  private createdLink = false;
  private readonly addedAddresses: string[] = [];

  constructor(exec: Exec, opts: NodeSetupOptions, log: Logger) {
    this.exec = exec;
    this.opts = opts;
    this.log = log;
    this.addresses = opts.addresses.filter((a) => !isLoopback(a.host));
  }

  async setup(): Promise<void> {
    const loopback = this.opts.addresses.filter((a) => isLoopback(a.host)).map((a) => a.host);
    if (loopback.length && (this.opts.setupInterface || this.opts.setupIptables)) {
      this.log.info({ addresses: loopback }, 'loopback listen addresses need no node set-up');
    }
    if (this.addresses.length === 0) return;
    if (this.opts.setupInterface) await this.setupInterface();
    if (this.opts.setupIptables) await this.ensureRules();
  }

  private async setupInterface(): Promise<void> {
    const name = this.opts.interfaceName;
    this.device = name;
    try {
      await this.exec('ip', ['link', 'add', name, 'type', 'dummy']);
      this.createdLink = true;
    } catch (e) {
      const text = errText(e);
      if (/File exists/i.test(text)) {
        this.log.info({ interface: name }, 'dummy interface already exists; reusing it');
      } else if (/Unknown device type|not supported|Operation not supported/i.test(text)) {
        this.device = 'lo';
        this.log.warn({ interface: name }, 'the kernel has no dummy interface driver; putting the listen addresses on lo instead');
      } else throw e;
    }
    if (this.device !== 'lo') await this.exec('ip', ['link', 'set', this.device, 'up']);
    for (const a of new Set(this.addresses.map((x) => x.host))) {
      const prefix = a.includes(':') ? `${a}/128` : `${a}/32`;
      try {
        await this.exec('ip', ['addr', 'add', prefix, 'dev', this.device]);
        this.addedAddresses.push(prefix);
      } catch (e) {
        if (!/File exists|already assigned/i.test(errText(e))) throw e;
      }
    }
    this.log.info({ device: this.device, addresses: this.addresses.map((a) => a.host) }, 'listen addresses are on the node');
  }

  /** Adds missing rules (idempotent; also run periodically in case something flushed them). */
  async ensureRules(): Promise<number> {
    let added = 0;
    for (const a of this.addresses) {
      const tool = a.host.includes(':') ? 'ip6tables' : 'iptables';
      for (const r of notrackRules(a)) {
        try {
          await this.exec(tool, ['-w', '-t', r.table, '-C', r.chain, ...r.spec]);
        } catch {
          await this.exec(tool, ['-w', '-t', r.table, '-I', r.chain, '1', ...r.spec]);
          added++;
        }
      }
    }
    return added;
  }

  async teardown(): Promise<void> {
    const problems: string[] = [];
    if (this.addresses.length === 0) return;
    if (this.opts.setupIptables) {
      for (const a of this.addresses) {
        const tool = a.host.includes(':') ? 'ip6tables' : 'iptables';
        for (const r of notrackRules(a)) {
          // -D removes one copy; repeat until none is left.
          for (let i = 0; i < 10; i++) {
            try {
              await this.exec(tool, ['-w', '-t', r.table, '-D', r.chain, ...r.spec]);
            } catch {
              break;
            }
          }
        }
      }
    }
    if (this.opts.setupInterface) {
      if (this.createdLink) {
        try {
          await this.exec('ip', ['link', 'del', this.device]);
        } catch (e) {
          problems.push(errText(e));
        }
      } else {
        for (const prefix of this.addedAddresses) {
          try {
            await this.exec('ip', ['addr', 'del', prefix, 'dev', this.device]);
          } catch (e) {
            problems.push(errText(e));
          }
        }
      }
    }
    if (problems.length) this.log.warn({ problems }, 'node teardown left something behind');
  }
}
