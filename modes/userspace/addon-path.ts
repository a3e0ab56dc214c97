// Where the forwarder's addon (native/*.c) is built.
export const forwarderAddon = new URL('../../build/Release/kproxy_forwarder.node', import.meta.url);
