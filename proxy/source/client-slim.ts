// What the client library's kubeconfig module (config.js) and list/watch
// module (cache.js) take from its generated code, and nothing more: they are
// pointed here instead of the generated index and the model serializer
// (client-library.ts).
export { createConfiguration } from '@kubernetes/client-node/dist/gen/configuration.js';
export { ServerConfiguration } from '@kubernetes/client-node/dist/gen/servers.js';

/**
 * ListWatch serializes its label and field selectors, plain strings, which
 * the library's serializer returns as they are. Any other use would need
 * the generated models: it fails loudly rather than sending something else.
 */
export const ObjectSerializer = {
  serialize(data: unknown, type: string): unknown {
    if (type === 'string' && (typeof data === 'string' || data === undefined)) return data;
    throw new Error(`the Kubernetes client library was loaded without its models (proxy/source/client-library.ts): cannot serialize ${type}`);
  },
};
