{
  "targets": [
    {
      "target_name": "kproxy_dns",
      "sources": ["dns-cache/native/addon.c", "dns-cache/native/udp-batch.c"],
      "include_dirs": ["lib/native"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "kproxy_memory",
      "sources": ["lib/native/memory.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "kproxy_forwarder",
      "sources": ["modes/userspace/native/addon.c", "modes/userspace/native/tcp-relay.c", "modes/userspace/native/udp-relay.c", "modes/userspace/native/fd-pass.c"],
      "include_dirs": ["lib/native"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "kproxy_nft_events",
      "sources": ["modes/native/nft-events.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
