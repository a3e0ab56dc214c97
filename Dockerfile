# kproxy node image: Node.js 24 runs the TypeScript sources directly.

# The native addons (dns-cache/native: the DNS cache's batched UDP;
# lib/native: malloc_trim for every part; the userspace forwarder's TCP and
# UDP relays; modes/native: the nf_tables event listener) are built here so the image needs no compiler.
FROM node:24-bookworm-slim AS addon
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY binding.gyp ./
COPY dns-cache/native ./dns-cache/native
COPY lib/native ./lib/native
COPY modes/userspace/native ./modes/userspace/native
COPY modes/native ./modes/native
RUN node /usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js rebuild --nodedir=/usr/local

FROM node:24-bookworm-slim

# The kernel tools kproxy drives (always called by absolute path); ipvsadm
# and procps (sysctl) for the IPVS mode.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables ipset conntrack iproute2 ipvsadm procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kproxy
COPY package.json package-lock.json ./
# The base image already has Node.js 24: skip install scripts (the `node`
# package would download a second copy); no runtime dependency needs one.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY bin ./bin
COPY lib ./lib
COPY proxy ./proxy
COPY modes ./modes
COPY dns-cache ./dns-cache
COPY --from=addon /build/build/Release/kproxy_dns.node /build/build/Release/kproxy_memory.node /build/build/Release/kproxy_forwarder.node /build/build/Release/kproxy_nft_events.node ./build/Release/
RUN ln -s /opt/kproxy/bin/kproxy.js /usr/local/bin/kproxy
# Node.js keeps the sources' compiled, type-stripped code here, so a process
# starts without loading the TypeScript stripper (about 20 MB less memory).
ENV NODE_COMPILE_CACHE=/opt/kproxy/.compile-cache
# dns-cache/kube-zone.ts is loaded only for zones answered from an API
# server; the userspace forwarder's worker processes load their own modules
# (worker.ts).
# proxy/cli.ts first: importing it registers the hook that loads the
# Kubernetes client library without its generated code
# (proxy/source/client-library.ts), so the cache holds what kproxy loads at
# run time (client-slim.ts, not the generated code).
RUN node --input-type=module -e "for (const m of ['proxy/cli.ts', 'proxy/config.ts', 'proxy/main.ts', 'dns-cache/main.ts', 'dns-cache/kube-zone.ts', 'proxy/commands/dump.ts', 'proxy/commands/diff.ts', 'proxy/commands/explain.ts', 'proxy/commands/cleanup.ts', 'modes/userspace/worker.ts']) await import('/opt/kproxy/' + m)"

# kproxy's command line (bin/kproxy.js) starts Node.js with
# --max-semi-space-size=8: a small young generation keeps RSS near the live
# data during a full sync of 10,000 Services.
ENTRYPOINT ["kproxy"]
