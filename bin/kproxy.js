#!/usr/bin/env -S node --max-semi-space-size=8
// kproxy: a kube-proxy replacement. Needs Node.js 24 or later (runs the
// TypeScript sources directly), checked before the sources are loaded so an
// older Node.js gets a clear message instead of a loader error.
// --max-semi-space-size=8 (on the command line: V8 cannot change it once
// started) caps V8's young generation: at 10,000 Services it would otherwise
// grow to about 100 MB during a full sync. A flag given here wins over the
// same flag in NODE_OPTIONS; run `node --max-semi-space-size=N bin/kproxy.js`
// to choose another size.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  console.error(`kproxy: needs Node.js 24 or later, this is ${process.version}; ` +
    'after `npm ci` run it as `npx kproxy ...` (or node_modules/.bin/node bin/kproxy.js ...)');
  process.exit(2);
}
// Stripping the sources' types loads a WebAssembly compiler (about 20 MB of
// resident memory for the life of the process); Node.js's compile cache keeps
// the stripped code, so a warm cache (NODE_COMPILE_CACHE, filled when the
// image is built) starts without it.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
const { main } = await import('../proxy/cli.ts');

process.exit(await main(process.argv.slice(2)));
