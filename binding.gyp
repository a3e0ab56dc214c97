{
  "targets": [
    {
      "target_name": "kproxy_native",
      "sources": ["dns-cache/native/addon.c", "dns-cache/native/udp-batch.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "kproxy_memory",
      "sources": ["lib/native/memory.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
