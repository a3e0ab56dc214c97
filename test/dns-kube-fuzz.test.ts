// Fuzz of the names a watched zone answers itself, over real sockets:
// names with many labels, odd cases, long labels, bytes no host name has,
// shapes close to real ones (_port._proto..., endpoint, pod and reverse
// names), any type and class. Every query under the zone gets a
// well-formed authoritative answer, nothing reaches its kube-dns, and the
// cache answers normally afterwards. The seed is printed for replays.
import test from 'ava';
import { fuzzRandom } from './helpers/fuzz.ts';
import dgram from 'node:dgram';
import { TestApiServer } from './helpers/apiserver.ts';
import { TestDnsServer, startTestCache } from './helpers/dns-server.ts';
import { clusterIPService, endpointSlice, externalNameService, headlessService, namespace } from './helpers/kube-dns-fixtures.ts';

const QUERIES = 30_000;

test('30,000 odd names under a watched zone: each answered well-formed and authoritatively, none forwarded', async (t) => {
  const { int } = fuzzRandom(t);
  const api = await TestApiServer.start();
  api.upsert(namespace('default'));
  api.upsert(clusterIPService('default', 'web', ['10.96.0.20', 'fd00::20'], [{ name: 'http', port: 80 }]));
  api.upsert(headlessService('default', 'db', [{ name: 'pg', port: 5432 }]));
  api.upsert(endpointSlice('default', 'db', 'a', [{ ip: '10.244.0.5', hostname: 'db-0' }, { ip: '10.244.0.6' }], [{ name: 'pg', port: 5432 }]));
  api.upsert(externalNameService('default', 'ext', 'web.default.svc.cluster.local'));
  const kubeDns = await TestDnsServer.start({ zone: 'cluster.local' });
  const cache = await startTestCache(['--zone', `cluster.local=k8s:${api.kubeconfigPath()},${kubeDns.address}`], { kube: { tuning: { retryInitialMs: 100, retryMaxMs: 300 } } });
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
  try {
    const until = Date.now() + 10_000;
    while (await cache.metric('kproxy_dns_cache_kubernetes_answering') !== 1) {
      if (Date.now() > until) throw new Error('the zone never answered');
      await new Promise((r) => setTimeout(r, 20));
    }
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_';
    const label = (): Buffer => {
      const kind = int(8);
      if (kind === 0) return Buffer.from(Array.from({ length: 1 + int(63) }, () => int(256))); // any byte, '.' and 0 included
      const len = kind === 1 ? 63 : 1 + int(kind === 2 ? 63 : 12);
      return Buffer.from(Array.from({ length: len }, () => alphabet[int(alphabet.length)]).join(''));
    };
    const oddCase = (s: string): string => [...s].map((c) => (int(2) ? c.toUpperCase() : c)).join('');
    const shapes = [
      (): string[] => [], (): string[] => ['svc'], (): string[] => ['default', 'svc'], (): string[] => ['web', 'default', 'svc'],
      (): string[] => ['_http', '_tcp', 'web', 'default', 'svc'], (): string[] => ['_pg', '_tcp', 'db', 'default', 'svc'],
      (): string[] => ['db-0', 'db', 'default', 'svc'], (): string[] => ['default', 'pod'], (): string[] => ['ext', 'default', 'svc'],
      (): string[] => ['10-244-0-5', 'default', 'pod'], (): string[] => ['dns-version'],
    ];
    const zone = [Buffer.from('cluster'), Buffer.from('local')];
    const build = (id: number): Buffer => {
      const tail = shapes[int(shapes.length)]().map((s) => Buffer.from(oddCase(s)));
      const head: Buffer[] = [];
      const extra = int(4) === 0 ? int(120) : int(5);
      for (let i = 0; i < extra; i++) head.push(label());
      const zl = zone.map((z) => Buffer.from(oddCase(z.toString())));
      let labels = [...head, ...tail, ...zl];
      // Keep within 255 bytes on the wire, dropping labels from the front.
      while (labels.reduce((n, l) => n + l.length + 1, 1) > 255) labels = labels.slice(1);
      const name = Buffer.concat([...labels.flatMap((l) => [Buffer.from([l.length]), l]), Buffer.from([0])]);
      const q = Buffer.alloc(12 + name.length + 4);
      q.writeUInt16BE(id, 0);
      q.writeUInt16BE(0x0100, 2);
      q.writeUInt16BE(1, 4);
      name.copy(q, 12);
      const types = [1, 28, 33, 12, 16, 5, 6, 2, 15, 255, 65, int(65536)];
      q.writeUInt16BE(types[int(types.length)], 12 + name.length);
      q.writeUInt16BE(int(8) === 0 ? int(65536) : 1, 12 + name.length + 2);
      return q;
    };
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const pending = new Map<number, Buffer>();
    const bad: string[] = [];
    let answered = 0;
    sock.on('message', (m) => {
      const id = m.readUInt16BE(0);
      const q = pending.get(id);
      if (!q) return;
      pending.delete(id);
      answered++;
      const flags = m.readUInt16BE(2);
      const rcode = flags & 0xf;
      const qlen = q.length - 12;
      const problems: string[] = [];
      if (!(flags & 0x8000)) problems.push('not a response');
      const qtype = q.readUInt16BE(q.length - 4);
      if (qtype === 251 || qtype === 252) {
        // Zone transfers are refused before any zone is looked at.
        if (rcode !== 4) problems.push(`rcode ${rcode} for a zone transfer`);
      } else {
        if (![0, 3].includes(rcode)) problems.push(`rcode ${rcode}`);
        if (!(flags & 0x0400)) problems.push('not authoritative');
      }
      if (m.length < 12 + qlen || !m.subarray(12, 12 + qlen).equals(q.subarray(12))) problems.push('question not echoed');
      if (problems.length && bad.length < 10) bad.push(`${q.subarray(12).toString('hex')}: ${problems.join(', ')}`);
    });
    let id = 1;
    for (let sent = 0; sent < QUERIES;) {
      for (let i = 0; i < 100 && sent < QUERIES; i++, sent++) {
        id = (id % 65535) + 1;
        const q = build(id);
        pending.set(id, q);
        sock.send(q, cache.port, cache.host);
      }
      const wait = Date.now() + 2000;
      while (pending.size > 0 && Date.now() < wait) await new Promise((r) => setTimeout(r, 2));
      if (pending.size > 0) {
        bad.push(`${pending.size} queries unanswered, e.g. ${[...pending.values()][0].subarray(12).toString('hex')}`);
        pending.clear();
      }
    }
    t.log(`${answered} answers`);
    t.deepEqual(bad, []);
    t.is(answered, QUERIES);
    t.is(kubeDns.udpQueries + kubeDns.tcpQueries, 0, 'nothing under the zone was forwarded');
    const r = await cache.ask('web.default.svc.cluster.local', 'A');
    t.deepEqual(r.packet.answers?.map((x) => x.data), ['10.96.0.20']);
    const rt = await cache.ask('db-0.db.default.svc.cluster.local', 'A', { tcp: true });
    t.deepEqual(rt.packet.answers?.map((x) => x.data), ['10.244.0.5']);
  } finally {
    sock.close();
    await cache.stop();
    await kubeDns.stop();
    await api.close();
  }
});
