// Loads the Kubernetes client library without its generated code. kproxy
// uses the library's kubeconfig handling (every auth method), its HTTP stack
// and its list/watch, never the generated API classes or models (it reads
// and writes plain JSON: kube-request.ts). But the kubeconfig module imports
// the generated index for two small functions, which loads every API class,
// and the list/watch module imports the model serializer for selector
// strings, which loads every model: about 17 MB of source that V8 keeps for
// the life of the process, and 1,400 modules. This hook points those two
// imports at client-slim.ts. A library version whose modules need more from
// them fails to link at start-up, loudly, never silently (and the tests run
// with the hook: package.json's ava nodeArguments).
//
// Registered as a side effect of importing this module, before anything
// loads the library: proxy/cli.ts imports it first. The hooks apply to
// modules resolved after that (not to an import graph already linked).
// module.registerHooks is marked "active development" in Node.js 24 (no
// warning); test/client-library.test.ts fails if it stops doing this.
import { registerHooks } from 'node:module';

const slim = new URL('./client-slim.ts', import.meta.url).href;
const library = '/node_modules/@kubernetes/client-node/dist/';
/** Library module -> the import in it that is pointed at client-slim.ts. */
const redirected: ReadonlyMap<string, string> = new Map([
  ['config.js', './gen/index.js'],
  ['cache.js', './serializer.js'],
]);

registerHooks({
  resolve(specifier, context, next) {
    const parent = context.parentURL;
    const at = parent?.lastIndexOf(library) ?? -1;
    if (at >= 0 && redirected.get(parent!.slice(at + library.length)) === specifier) {
      return { url: slim, shortCircuit: true };
    }
    return next(specifier, context);
  },
});
