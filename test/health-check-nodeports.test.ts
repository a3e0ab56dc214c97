// healthCheckNodePort servers over real HTTP: opened and closed as Services
// come and go, answering kube-proxy's 200/503 bodies.
import test from 'ava';
import { createServer } from 'node:net';
import { HealthCheckNodePorts, healthCheckTargets } from '../proxy/health-check-nodeports.ts';
import { silentLogger } from '../lib/log.ts';
import { ep, nodeState, svc, withPort } from './helpers/state.ts';

/** Free TCP ports on 127.0.0.1 (asked from the kernel, then released). */
async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    ports.push(await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    }));
  }
  return ports;
}

async function probe(port: number): Promise<{ status: number; body: unknown; weight: string | null } | 'refused'> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/`);
    return { status: r.status, body: await r.json(), weight: r.headers.get('x-load-balancing-endpoint-weight') };
  } catch {
    return 'refused';
  }
}

const local = (ip: string, extra = {}) => ep(ip, 8080, { isLocal: true, ...extra });

test('targets count distinct ready local endpoints over ports and families', (t) => {
  const state = nodeState([
    svc({ name: 'ns/lb:http', clusterIP: '10.96.0.1', port: 80, healthCheckNodePort: 31000, externalPolicyLocal: true,
      localEndpoints: [local('10.0.0.1'), local('10.0.0.2'), local('10.0.0.3', { ready: false, terminating: true })] }),
    svc({ name: 'ns/lb:https', clusterIP: '10.96.0.1', port: 443, healthCheckNodePort: 31000, externalPolicyLocal: true,
      localEndpoints: [local('10.0.0.1'), ep('10.0.0.1', 8443, { isLocal: true })] }),
    svc({ name: 'ns/lb:http', clusterIP: 'fd00::1', port: 80, healthCheckNodePort: 31000, externalPolicyLocal: true,
      localEndpoints: [ep('fd00::a', 8080, { isLocal: true })] }),
    svc({ name: 'ns/plain:http', clusterIP: '10.96.0.2', port: 80, clusterEndpoints: [ep('10.0.0.9', 80)] }),
  ]);
  t.deepEqual([...healthCheckTargets(state)], [[31000, { namespace: 'ns', name: 'lb', localEndpoints: 4 }]]);
});

test('servers open for Services with a healthCheckNodePort, answer 200/503 as kube-proxy, and close when the Service goes', async (t) => {
  const [p1, p2] = await freePorts(2);
  let proxyHealthy = true;
  const hc = new HealthCheckNodePorts({ hosts: ['127.0.0.1'], proxyHealthy: () => proxyHealthy }, silentLogger());
  t.teardown(() => hc.close());
  const withEps = svc({ name: 'default/web:http', clusterIP: '10.96.0.10', port: 80, nodePort: 30080, healthCheckNodePort: p1,
    externalPolicyLocal: true, localEndpoints: [local('10.180.0.4'), local('10.180.0.5')] });
  const noEps = svc({ name: 'default/empty:http', clusterIP: '10.96.0.11', port: 80, nodePort: 30081, healthCheckNodePort: p2,
    externalPolicyLocal: true, clusterEndpoints: [], localEndpoints: [] });

  await hc.update(nodeState([withEps, noEps]));
  t.deepEqual(await hc.ports(), [p1, p2].sort((a, b) => a - b));
  t.deepEqual(await probe(p1), {
    status: 200, weight: '2',
    body: { service: { namespace: 'default', name: 'web' }, localEndpoints: 2, serviceProxyHealthy: true },
  });
  t.deepEqual(await probe(p2), {
    status: 503, weight: '0',
    body: { service: { namespace: 'default', name: 'empty' }, localEndpoints: 0, serviceProxyHealthy: true },
  });

  // The proxy itself unhealthy: 503 even with local endpoints.
  proxyHealthy = false;
  const r = await probe(p1);
  t.is(r !== 'refused' && r.status, 503);
  t.deepEqual(r !== 'refused' && r.body, { service: { namespace: 'default', name: 'web' }, localEndpoints: 2, serviceProxyHealthy: false });
  proxyHealthy = true;

  // Endpoint count follows the state without reopening the server.
  await hc.update(nodeState([withPort(withEps, { localEndpoints: [local('10.180.0.4')] }), noEps]));
  const one = await probe(p1);
  t.is(one !== 'refused' && (one.body as { localEndpoints: number }).localEndpoints, 1);

  // The Service without endpoints goes away: its server closes.
  await hc.update(nodeState([withEps]));
  t.deepEqual(await hc.ports(), [p1]);
  t.is(await probe(p2), 'refused');
  await hc.close();
  t.is(await probe(p1), 'refused');
});

test('a port that cannot be opened is retried on the next update', async (t) => {
  const [p] = await freePorts(1);
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(p, '127.0.0.1', () => r()));
  const hc = new HealthCheckNodePorts({ hosts: ['127.0.0.1'], proxyHealthy: () => true }, silentLogger());
  t.teardown(() => hc.close());
  const state = nodeState([svc({ name: 'a/b:p', clusterIP: '10.96.0.1', port: 80, healthCheckNodePort: p, externalPolicyLocal: true, localEndpoints: [local('10.0.0.1')] })]);
  await hc.update(state);
  t.deepEqual(await hc.ports(), []);
  await new Promise<void>((r) => blocker.close(() => r()));
  await hc.update(state);
  t.deepEqual(await hc.ports(), [p]);
  const r = await probe(p);
  t.is(r !== 'refused' && r.status, 200);
});

test('one server per listen address; kube-proxy\'s choice of addresses from --nodeport-addresses', async (t) => {
  const { healthCheckHosts } = await import('../proxy/mode-options.ts');
  const { loadConfig } = await import('../proxy/config.ts');
  const cfg = (args: string[]) => loadConfig(args, { hostname: 'n' });
  const local = ['127.0.0.1', '192.168.0.2', '10.0.0.5', 'fd00::2'];
  t.is(healthCheckHosts(cfg([]), ['192.168.0.2'], local), undefined, 'every address');
  t.deepEqual(healthCheckHosts(cfg(['--nodeport-addresses', '192.168.0.0/24,fd00::/64']), [], local), ['192.168.0.2', 'fd00::2']);
  t.deepEqual(healthCheckHosts(cfg(['--nodeport-addresses', '172.16.0.0/12']), [], local), []);
  t.deepEqual(healthCheckHosts(cfg(['--nodeport-addresses', 'primary']), ['192.168.0.2'], local), ['192.168.0.2']);

  const [p] = await freePorts(1);
  const hc = new HealthCheckNodePorts({ hosts: ['127.0.0.1', '127.0.0.2'], proxyHealthy: () => true }, silentLogger());
  t.teardown(() => hc.close());
  await hc.update(nodeState([svc({ name: 'a/b:p', clusterIP: '10.96.0.1', port: 80, healthCheckNodePort: p, externalPolicyLocal: true, localEndpoints: [local2('10.0.0.1')] })]));
  for (const host of ['127.0.0.1', '127.0.0.2']) {
    const r = await fetch(`http://${host}:${p}/`);
    t.is(r.status, 200, host);
  }
  const other = await fetch(`http://127.0.0.3:${p}/`).then((r) => r.status, () => 'refused');
  t.is(other, 'refused', 'not on addresses outside the list');
});

function local2(ip: string) {
  return ep(ip, 8080, { isLocal: true });
}
