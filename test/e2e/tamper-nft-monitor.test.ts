// The tampering cases of tamper.test.ts whose repairs ride on nf_tables
// events, run again with kproxy watching through `nft monitor`: what a node
// gets when the listener's addon was not built (kproxy is started with the
// addon's path pointing nowhere, and must say so in its log).
process.env.KPROXY_E2E_NFT_EVENTS = 'nft-monitor';
await import('./tamper.test.ts');
