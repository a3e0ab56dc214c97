{
  "targets": [
    {
      "target_name": "kproxy_native",
      "sources": ["dns-cache/native/addon.c", "dns-cache/native/udp-batch.c", "dns-cache/native/memory.c", "modes/userspace/native/tcp-relay.c", "modes/userspace/native/udp-relay.c", "modes/userspace/native/fd-pass.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
