// Lets a process inside a sandbox namespace reach a server listening on the
// host's 127.0.0.1 without touching the host's network: a relay in the
// namespace accepts TCP on its own 127.0.0.1:port and forwards each
// connection over a Unix socket (a file, so it crosses namespaces) to this
// process, which connects it on to the host port.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeIn, withTimeout } from '../helpers/traffic.ts';

const relayScript = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
net.createServer((c) => {
  const u = net.connect(a.path);
  c.pipe(u); u.pipe(c);
  const end = () => { c.destroy(); u.destroy(); };
  c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
}).listen(a.port, '127.0.0.1', () => process.stdout.write('ready\n'));
`;

export interface Relay {
  close(): Promise<void>;
}

function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => { a.destroy(); b.destroy(); };
  for (const s of [a, b]) { s.on('error', end); s.on('close', end); }
}

/** Forwards `ns`'s 127.0.0.1:`nsPort` to the host's 127.0.0.1:`hostPort`. */
export async function relayIntoNamespace(ns: string, nsPort: number, hostPort: () => number): Promise<Relay> {
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-relay-'));
  const path = join(dir, 'relay.sock');
  const server: Server = createServer((c) => splice(c, connect(hostPort(), '127.0.0.1')));
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, resolve));
  const child = nodeIn(ns, relayScript, { path, port: nsPort });
  child.stdin!.end();
  await withTimeout(new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => { if (b.toString().includes('ready')) resolve(); });
    child.on('close', (code) => reject(new Error(`relay exited (${code})`)));
  }), 10_000, 'relay start');
  return {
    async close() {
      child.kill('SIGKILL');
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A kubeconfig with which a process inside `ns` reaches `api` (the test API
 * server on the host): its own kubeconfig pointed at a relay on the
 * namespace's 127.0.0.1:`nsPort`. close() stops the relay and removes the file.
 */
export async function kubeconfigInNamespace(api: { readonly url: string; kubeconfigPath(): string }, ns: string, nsPort = 6443): Promise<{ path: string; close(): Promise<void> }> {
  const relay = await relayIntoNamespace(ns, nsPort, () => Number(new URL(api.url).port));
  const dir = await mkdtemp(join(tmpdir(), 'kproxy-kubeconfig-'));
  const path = join(dir, 'kubeconfig');
  await writeFile(path, (await readFile(api.kubeconfigPath(), 'utf8')).replace(api.url, `http://127.0.0.1:${nsPort}`));
  return {
    path,
    async close() {
      await relay.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
