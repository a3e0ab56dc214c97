#!/usr/bin/env node
// kproxy: a kube-proxy replacement. Needs Node.js 24 or later (runs the
// TypeScript sources directly).
import { main } from '../proxy/cli.ts';

process.exit(await main(process.argv.slice(2)));
