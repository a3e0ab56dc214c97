// Where the API server is and how to authenticate: the --kubeconfig file,
// else the in-cluster service account (a DaemonSet's normal case), else the
// client library's defaults ($KUBECONFIG, ~/.kube/config).
// The library's module itself, not its index (which loads all its generated code: client-library.ts).
import { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { KproxyError } from '../../lib/errors.ts';

export interface KubeConfigOptions {
  /** Only the in-cluster service account (no fallback to a kubeconfig file). */
  readonly inCluster?: boolean;
}

export function loadKubeConfig(path?: string, opts: KubeConfigOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  if (opts.inCluster && !path && !process.env.KUBERNETES_SERVICE_HOST) {
    throw new KproxyError('KPROXY_BAD_CONFIG', 'not running in a cluster (KUBERNETES_SERVICE_HOST is not set): the in-cluster service account cannot be used');
  }
  try {
    if (path) kc.loadFromFile(path);
    else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    const from = path ? `kubeconfig ${path}` : 'the in-cluster or default kubeconfig';
    throw new KproxyError('KPROXY_BAD_CONFIG', `cannot load ${from}: ${(err as Error).message}`, { cause: err });
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    const from = path ? `kubeconfig ${path}` : 'the default kubeconfig';
    throw new KproxyError('KPROXY_BAD_CONFIG', `${from} names no current cluster with a server address`);
  }
  // With nothing configured the library falls back to http://localhost:8080.
  if (!path && cluster.name === 'cluster' && cluster.server === 'http://localhost:8080') {
    throw new KproxyError('KPROXY_BAD_CONFIG',
      'no kubeconfig found: pass --kubeconfig, set KUBECONFIG, provide ~/.kube/config, or run in a cluster');
  }
  // The client library refuses plain http otherwise, on every request; say so once, up front.
  if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify) {
    throw new KproxyError('KPROXY_BAD_CONFIG',
      `cluster ${cluster.name} uses plain http (${cluster.server}); the Kubernetes client allows that only with insecure-skip-tls-verify: true`);
  }
  return kc;
}
