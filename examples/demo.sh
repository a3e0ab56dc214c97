#!/bin/sh
# `npm run demo`: kproxy on a sandbox of network namespaces (see examples/demo.ts).
# Needs root. Installs the kernel tools it uses when they are missing (Debian).
# Pass --mode nftables to see the nftables mode: npm run demo -- --mode nftables
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/node_modules/.bin:$PATH"
export PATH

if [ "$(id -u)" != 0 ]; then
  echo "the demo creates network namespaces and must run as root" >&2
  exit 1
fi

# tool:package pairs; tools are looked up in the system directories only.
missing=""
for pair in ip:iproute2 iptables:iptables nft:nftables ipset:ipset conntrack:conntrack; do
  tool=${pair%%:*}
  found=""
  for dir in /usr/sbin /sbin /usr/bin /bin; do
    [ -x "$dir/$tool" ] && found=1
  done
  [ -n "$found" ] || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

# Whatever happens (an error, Ctrl-C), remove the demo's namespaces.
trap 'node examples/demo.ts --cleanup-only' EXIT
trap 'exit 130' INT TERM
node examples/demo.ts "$@"
