// Whole-dump golden tests of the nftables mode: the fixed table, the exact
// batch of a full sync, and what each Service scenario adds to the table.
// A failure shows the diff; behaviour is checked by the tracer tests.
import test from 'ava';
import { NftablesBackend } from '../modes/nftables/backend.ts';
import { silentLogger } from '../lib/log.ts';
import { nodeState } from './helpers/state.ts';
import { byId, defaultOptions as options, scenarios, stateOf } from './fixtures/services.ts';
import { addedBlocks, dedent, loaded, spaced } from './fixtures/nftables/golden.ts';

test('the table of a node without Services', (t) => {
  t.is(spaced(loaded(nodeState([]), options).dump('ip', 'kproxy')), dedent(`
    table ip kproxy {
      map service-ips {
        type ipv4_addr . inet_proto . inet_service : verdict
      }

      map service-nodeports {
        type inet_proto . inet_service : verdict
      }

      map endpoints-tcp {
        typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      }

      map endpoints-udp {
        typeof ip daddr . udp dport . numgen random mod 1 : ip daddr . udp dport
      }

      map endpoints-sctp {
        typeof ip daddr . sctp dport . numgen random mod 1 : ip daddr . sctp dport
      }

      map nodeport-endpoints-tcp {
        typeof tcp dport . numgen random mod 1 : ip daddr . tcp dport
      }

      map nodeport-endpoints-udp {
        typeof udp dport . numgen random mod 1 : ip daddr . udp dport
      }

      map nodeport-endpoints-sctp {
        typeof sctp dport . numgen random mod 1 : ip daddr . sctp dport
      }

      map no-endpoint-services {
        type ipv4_addr . inet_proto . inet_service : verdict
      }

      map no-endpoint-nodeports {
        type inet_proto . inet_service : verdict
      }

      map affinity-record {
        type ipv4_addr . inet_proto . inet_service : verdict
      }

      map affinity-record-nodeports {
        type inet_proto . inet_service : verdict
      }

      set hairpin {
        type ipv4_addr . ipv4_addr
      }

      chain mark-for-masquerade {
        meta mark set meta mark | 0x00004000
      }

      chain masquerading {
        ct status dnat meta l4proto tcp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affinity-record
        ct status dnat meta l4proto udp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affinity-record
        ct status dnat meta l4proto sctp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affinity-record
        ct status dnat meta l4proto tcp meta l4proto . ct original proto-dst vmap @affinity-record-nodeports
        ct status dnat meta l4proto udp meta l4proto . ct original proto-dst vmap @affinity-record-nodeports
        ct status dnat meta l4proto sctp meta l4proto . ct original proto-dst vmap @affinity-record-nodeports
        ct status dnat ip saddr . ip daddr @hairpin masquerade fully-random
        meta mark & 0x00004000 == 0x00000000 return
        meta mark set meta mark ^ 0x00004000
        masquerade fully-random
      }

      chain reject-chain {
        reject with tcp reset
        reject
      }

      chain endpoints-check {
        ip daddr . meta l4proto . th dport vmap @no-endpoint-services
        fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
      }

      chain services {
        ip daddr . meta l4proto . th dport vmap @service-ips
        fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
      }

      chain filter-prerouting {
        type filter hook prerouting priority dstnat - 10; policy accept;
        ct state new jump endpoints-check
      }

      chain filter-output {
        type filter hook output priority -110; policy accept;
        ct state new jump endpoints-check
      }

      chain nat-prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump services
      }

      chain nat-output {
        type nat hook output priority -100; policy accept;
        jump services
      }

      chain nat-postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump masquerading
      }
    }
  `));
});

test('a full sync is one batch that rebuilds the table atomically', (t) => {
  const batch = new NftablesBackend({ ...options, families: [4] }, silentLogger()).render(stateOf(byId('clusterip-3-endpoints')));
  t.is(batch, dedent(`
    add table ip kproxy
    delete table ip kproxy
    add table ip kproxy
    add map ip kproxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
    add map ip kproxy service-nodeports { type inet_proto . inet_service : verdict ; }
    add map ip kproxy endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }
    add map ip kproxy endpoints-udp { typeof ip daddr . udp dport . numgen random mod 1 : ip daddr . udp dport ; }
    add map ip kproxy endpoints-sctp { typeof ip daddr . sctp dport . numgen random mod 1 : ip daddr . sctp dport ; }
    add map ip kproxy nodeport-endpoints-tcp { typeof tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }
    add map ip kproxy nodeport-endpoints-udp { typeof udp dport . numgen random mod 1 : ip daddr . udp dport ; }
    add map ip kproxy nodeport-endpoints-sctp { typeof sctp dport . numgen random mod 1 : ip daddr . sctp dport ; }
    add map ip kproxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }
    add map ip kproxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }
    add map ip kproxy affinity-record { type ipv4_addr . inet_proto . inet_service : verdict ; }
    add map ip kproxy affinity-record-nodeports { type inet_proto . inet_service : verdict ; }
    add set ip kproxy hairpin { type ipv4_addr . ipv4_addr ; }
    add chain ip kproxy cluster-3
    add chain ip kproxy mark-for-masquerade
    add chain ip kproxy masquerading
    add chain ip kproxy reject-chain
    add chain ip kproxy endpoints-check
    add chain ip kproxy services
    add chain ip kproxy filter-prerouting { type filter hook prerouting priority dstnat - 10 ; policy accept ; }
    add chain ip kproxy filter-output { type filter hook output priority -110 ; policy accept ; }
    add chain ip kproxy nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }
    add chain ip kproxy nat-output { type nat hook output priority -100 ; policy accept ; }
    add chain ip kproxy nat-postrouting { type nat hook postrouting priority srcnat ; policy accept ; }
    add rule ip kproxy cluster-3 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
    add rule ip kproxy cluster-3 dnat ip to ip daddr . tcp dport . numgen random mod 3 map @endpoints-tcp
    add rule ip kproxy cluster-3 dnat ip to ip daddr . udp dport . numgen random mod 3 map @endpoints-udp
    add rule ip kproxy cluster-3 dnat ip to ip daddr . sctp dport . numgen random mod 3 map @endpoints-sctp
    add rule ip kproxy mark-for-masquerade meta mark set meta mark | 0x00004000
    add rule ip kproxy masquerading ct status dnat meta l4proto tcp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affinity-record
    add rule ip kproxy masquerading ct status dnat meta l4proto udp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affinity-record
    add rule ip kproxy masquerading ct status dnat meta l4proto sctp ct original ip daddr . meta l4proto . ct original proto-dst vmap @affinity-record
    add rule ip kproxy masquerading ct status dnat meta l4proto tcp meta l4proto . ct original proto-dst vmap @affinity-record-nodeports
    add rule ip kproxy masquerading ct status dnat meta l4proto udp meta l4proto . ct original proto-dst vmap @affinity-record-nodeports
    add rule ip kproxy masquerading ct status dnat meta l4proto sctp meta l4proto . ct original proto-dst vmap @affinity-record-nodeports
    add rule ip kproxy masquerading ct status dnat ip saddr . ip daddr @hairpin masquerade fully-random
    add rule ip kproxy masquerading meta mark & 0x00004000 == 0x00000000 return
    add rule ip kproxy masquerading meta mark set meta mark ^ 0x00004000
    add rule ip kproxy masquerading masquerade fully-random
    add rule ip kproxy reject-chain reject with tcp reset
    add rule ip kproxy reject-chain reject
    add rule ip kproxy endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
    add rule ip kproxy endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports
    add rule ip kproxy services ip daddr . meta l4proto . th dport vmap @service-ips
    add rule ip kproxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
    add rule ip kproxy filter-prerouting ct state new jump endpoints-check
    add rule ip kproxy filter-output ct state new jump endpoints-check
    add rule ip kproxy nat-prerouting jump services
    add rule ip kproxy nat-output jump services
    add rule ip kproxy nat-postrouting jump masquerading
    add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 : goto cluster-3 }
    add element ip kproxy endpoints-tcp { 10.96.0.10 . 80 . 0 : 10.244.1.11 . 8080, 10.96.0.10 . 80 . 1 : 10.244.2.12 . 8080, 10.96.0.10 . 80 . 2 : 10.244.3.13 . 8080 }
    add element ip kproxy hairpin { 10.244.1.11 . 10.244.1.11 }
  `));
});

const goldens: Record<string, string> = {
  "ClusterIP, 3 endpoints": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.10 . tcp . 80 : goto cluster-3 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.10 . 80 . 0 : 10.244.1.11 . 8080,
             10.96.0.10 . 80 . 1 : 10.244.2.12 . 8080,
             10.96.0.10 . 80 . 2 : 10.244.3.13 . 8080 }
    }

    set hairpin {
      type ipv4_addr . ipv4_addr
      elements = { 10.244.1.11 . 10.244.1.11 }
    }

    chain cluster-3 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 3 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 3 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 3 map @endpoints-sctp
    }
`,
  "NodePort": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.11 . tcp . 80 : goto cluster-2 }
    }

    map service-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30080 : goto nodeport-2 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.11 . 80 . 0 : 10.244.2.21 . 80,
             10.96.0.11 . 80 . 1 : 10.244.3.22 . 80 }
    }

    map nodeport-endpoints-tcp {
      typeof tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 30080 . 0 : 10.244.2.21 . 80,
             30080 . 1 : 10.244.3.22 . 80 }
    }

    chain cluster-2 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 2 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 2 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 2 map @endpoints-sctp
    }

    chain nodeport-2 {
      jump mark-for-masquerade
      dnat ip to tcp dport . numgen random mod 2 map @nodeport-endpoints-tcp
      dnat ip to udp dport . numgen random mod 2 map @nodeport-endpoints-udp
      dnat ip to sctp dport . numgen random mod 2 map @nodeport-endpoints-sctp
    }
`,
  "externalIP": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.12 . tcp . 80 : goto cluster-1,
             203.0.113.10 . tcp . 80 : goto external-1 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.12 . 80 . 0 : 10.244.2.31 . 80,
             203.0.113.10 . 80 . 0 : 10.244.2.31 . 80 }
    }

    chain cluster-1 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 1 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 1 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 1 map @endpoints-sctp
    }

    chain external-1 {
      jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 1 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 1 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 1 map @endpoints-sctp
    }
`,
  "LoadBalancer with source ranges": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.13 . tcp . 443 : goto svc-H6FYYXJG-shop/lb/tcp/https,
             198.51.100.7 . tcp . 443 : goto fw-H6FYYXJG-shop/lb/tcp/https }
    }

    map service-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30443 : goto ext-H6FYYXJG-shop/lb/tcp/https }
    }

    chain svc-H6FYYXJG-shop/lb/tcp/https {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      goto eps-H6FYYXJG-shop/lb/tcp/https
    }

    chain ext-H6FYYXJG-shop/lb/tcp/https {
      jump mark-for-masquerade
      goto eps-H6FYYXJG-shop/lb/tcp/https
    }

    chain fw-H6FYYXJG-shop/lb/tcp/https {
      ip saddr { 192.0.2.0/24, 198.51.100.7 } goto ext-H6FYYXJG-shop/lb/tcp/https
      drop
    }

    chain eps-H6FYYXJG-shop/lb/tcp/https {
      meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.244.2.41 . 8443, 1 : 10.244.3.42 . 8443 }
    }
`,
  "ClientIP affinity": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.14 . tcp . 80 : goto svc-OYG37ED3-shop/sticky/tcp/80 }
    }

    map affinity-record {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.14 . tcp . 80 : jump rec-OYG37ED3-shop/sticky/tcp/80 }
    }

    set aff-OYG37ED3-10.244.2.51/80 {
      type ipv4_addr
      size 65535
      flags dynamic,timeout
      timeout 3h
    }

    set aff-OYG37ED3-10.244.3.52/80 {
      type ipv4_addr
      size 65535
      flags dynamic,timeout
      timeout 3h
    }

    chain svc-OYG37ED3-shop/sticky/tcp/80 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      goto eps-OYG37ED3-shop/sticky/tcp/80
    }

    chain eps-OYG37ED3-shop/sticky/tcp/80 {
      ip saddr @aff-OYG37ED3-10.244.2.51/80 meta l4proto tcp dnat to 10.244.2.51:80
      ip saddr @aff-OYG37ED3-10.244.3.52/80 meta l4proto tcp dnat to 10.244.3.52:80
      meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.244.2.51 . 80, 1 : 10.244.3.52 . 80 }
    }

    chain rec-OYG37ED3-shop/sticky/tcp/80 {
      ip daddr 10.244.2.51 th dport 80 update @aff-OYG37ED3-10.244.2.51/80 { ip saddr }
      ip daddr 10.244.3.52 th dport 80 update @aff-OYG37ED3-10.244.3.52/80 { ip saddr }
    }
`,
  "externalTrafficPolicy Local with a local endpoint": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.15 . tcp . 80 : goto svc-RG5H7NP6-shop/etp/tcp/80,
             198.51.100.8 . tcp . 80 : goto ext-RG5H7NP6-shop/etp/tcp/80 }
    }

    map service-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30081 : goto ext-RG5H7NP6-shop/etp/tcp/80 }
    }

    set hairpin {
      type ipv4_addr . ipv4_addr
      elements = { 10.244.1.61 . 10.244.1.61 }
    }

    chain svc-RG5H7NP6-shop/etp/tcp/80 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      goto eps-RG5H7NP6-shop/etp/tcp/80
    }

    chain ext-RG5H7NP6-shop/etp/tcp/80 {
      ip saddr 10.244.0.0/16 goto eps-RG5H7NP6-shop/etp/tcp/80
      fib saddr type local jump mark-for-masquerade
      fib saddr type local goto eps-RG5H7NP6-shop/etp/tcp/80
      goto leps-RG5H7NP6-shop/etp/tcp/80
    }

    chain eps-RG5H7NP6-shop/etp/tcp/80 {
      meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.244.1.61 . 80, 1 : 10.244.2.62 . 80 }
    }

    chain leps-RG5H7NP6-shop/etp/tcp/80 {
      meta l4proto tcp dnat to 10.244.1.61:80
    }
`,
  "externalTrafficPolicy Local without a local endpoint": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.16 . tcp . 80 : goto svc-K3Z3IJK4-shop/etp-remote/tcp/80 }
    }

    map service-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30082 : goto ext-K3Z3IJK4-shop/etp-remote/tcp/80 }
    }

    chain svc-K3Z3IJK4-shop/etp-remote/tcp/80 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      goto eps-K3Z3IJK4-shop/etp-remote/tcp/80
    }

    chain ext-K3Z3IJK4-shop/etp-remote/tcp/80 {
      ip saddr 10.244.0.0/16 goto eps-K3Z3IJK4-shop/etp-remote/tcp/80
      fib saddr type local jump mark-for-masquerade
      fib saddr type local goto eps-K3Z3IJK4-shop/etp-remote/tcp/80
      drop
    }

    chain eps-K3Z3IJK4-shop/etp-remote/tcp/80 {
      meta l4proto tcp dnat to 10.244.2.71:80
    }
`,
  "internalTrafficPolicy Local": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.17 . tcp . 80 : goto svc-Q4X2BFTQ-shop/itp/tcp/80,
             10.96.0.18 . tcp . 80 : goto svc-3B2NUJIQ-shop/itp-remote/tcp/80 }
    }

    set hairpin {
      type ipv4_addr . ipv4_addr
      elements = { 10.244.1.81 . 10.244.1.81 }
    }

    chain svc-3B2NUJIQ-shop/itp-remote/tcp/80 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      drop
    }

    chain svc-Q4X2BFTQ-shop/itp/tcp/80 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      goto leps-Q4X2BFTQ-shop/itp/tcp/80
    }

    chain leps-Q4X2BFTQ-shop/itp/tcp/80 {
      meta l4proto tcp dnat to 10.244.1.81:80
    }
`,
  "no endpoints": `
    map no-endpoint-services {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.19 . tcp . 80 : goto reject-chain,
             203.0.113.19 . tcp . 80 : goto reject-chain }
    }

    map no-endpoint-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30083 : goto reject-chain }
    }
`,
  "UDP": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.20 . udp . 53 : goto cluster-2 }
    }

    map endpoints-udp {
      typeof ip daddr . udp dport . numgen random mod 1 : ip daddr . udp dport
      elements = { 10.96.0.20 . 53 . 0 : 10.244.2.91 . 53,
             10.96.0.20 . 53 . 1 : 10.244.3.92 . 53 }
    }

    chain cluster-2 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 2 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 2 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 2 map @endpoints-sctp
    }
`,
  "SCTP": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.21 . sctp . 9999 : goto cluster-1 }
    }

    map endpoints-sctp {
      typeof ip daddr . sctp dport . numgen random mod 1 : ip daddr . sctp dport
      elements = { 10.96.0.21 . 9999 . 0 : 10.244.2.101 . 9999 }
    }

    chain cluster-1 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 1 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 1 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 1 map @endpoints-sctp
    }
`,
  "IPv6": `
    map service-ips {
      type ipv6_addr . inet_proto . inet_service : verdict
      elements = { fd00:96::22 . tcp . 80 : goto cluster-2 }
    }

    map service-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30084 : goto nodeport-2 }
    }

    map endpoints-tcp {
      typeof ip6 daddr . tcp dport . numgen random mod 1 : ip6 daddr . tcp dport
      elements = { fd00:96::22 . 80 . 0 : fd00:244:2::11 . 80,
             fd00:96::22 . 80 . 1 : fd00:244:3::12 . 80 }
    }

    map nodeport-endpoints-tcp {
      typeof tcp dport . numgen random mod 1 : ip6 daddr . tcp dport
      elements = { 30084 . 0 : fd00:244:2::11 . 80,
             30084 . 1 : fd00:244:3::12 . 80 }
    }

    chain cluster-2 {
      ip6 saddr != fd00:244::/32 jump mark-for-masquerade
      dnat ip6 to ip6 daddr . tcp dport . numgen random mod 2 map @endpoints-tcp
      dnat ip6 to ip6 daddr . udp dport . numgen random mod 2 map @endpoints-udp
      dnat ip6 to ip6 daddr . sctp dport . numgen random mod 2 map @endpoints-sctp
    }

    chain nodeport-2 {
      jump mark-for-masquerade
      dnat ip6 to tcp dport . numgen random mod 2 map @nodeport-endpoints-tcp
      dnat ip6 to udp dport . numgen random mod 2 map @nodeport-endpoints-udp
      dnat ip6 to sctp dport . numgen random mod 2 map @nodeport-endpoints-sctp
    }
`,
  "multiple ports": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.23 . tcp . 80 : goto cluster-2,
             10.96.0.23 . tcp . 443 : goto cluster-2 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.23 . 80 . 0 : 10.244.2.111 . 8080,
             10.96.0.23 . 80 . 1 : 10.244.3.112 . 8080,
             10.96.0.23 . 443 . 0 : 10.244.2.111 . 8443,
             10.96.0.23 . 443 . 1 : 10.244.3.112 . 8443 }
    }

    chain cluster-2 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 2 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 2 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 2 map @endpoints-sctp
    }
`,
  "NodePorts on --nodeport-addresses only": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.24 . tcp . 80 : goto cluster-2 }
    }

    map service-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30090 : goto nodeport-2 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.24 . 80 . 0 : 10.244.2.121 . 80,
             10.96.0.24 . 80 . 1 : 10.244.3.122 . 80 }
    }

    map nodeport-endpoints-tcp {
      typeof tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 30090 . 0 : 10.244.2.121 . 80,
             30090 . 1 : 10.244.3.122 . 80 }
    }

    map no-endpoint-services {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.25 . tcp . 80 : goto reject-chain }
    }

    map no-endpoint-nodeports {
      type inet_proto . inet_service : verdict
      elements = { tcp . 30091 : goto reject-chain }
    }

    chain cluster-2 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 2 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 2 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 2 map @endpoints-sctp
    }

    chain nodeport-2 {
      jump mark-for-masquerade
      dnat ip to tcp dport . numgen random mod 2 map @nodeport-endpoints-tcp
      dnat ip to udp dport . numgen random mod 2 map @nodeport-endpoints-udp
      dnat ip to sctp dport . numgen random mod 2 map @nodeport-endpoints-sctp
    }
`,
  "terminating endpoints as a fallback": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.26 . tcp . 80 : goto cluster-1 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.26 . 80 . 0 : 10.244.2.131 . 80 }
    }

    chain cluster-1 {
      ip saddr != 10.244.0.0/16 jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 1 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 1 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 1 map @endpoints-sctp
    }
`,
  "UDP without endpoints": `
    map no-endpoint-services {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.27 . udp . 53 : goto reject-chain }
    }

    map no-endpoint-nodeports {
      type inet_proto . inet_service : verdict
      elements = { udp . 30053 : goto reject-chain }
    }
`,
  "--masquerade-all": `
    map service-ips {
      type ipv4_addr . inet_proto . inet_service : verdict
      elements = { 10.96.0.28 . tcp . 80 : goto cluster-1 }
    }

    map endpoints-tcp {
      typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
      elements = { 10.96.0.28 . 80 . 0 : 10.244.2.141 . 80 }
    }

    chain cluster-1 {
      jump mark-for-masquerade
      dnat ip to ip daddr . tcp dport . numgen random mod 1 map @endpoints-tcp
      dnat ip to ip daddr . udp dport . numgen random mod 1 map @endpoints-udp
      dnat ip to ip daddr . sctp dport . numgen random mod 1 map @endpoints-sctp
    }
`,
};

for (const s of scenarios) {
  test(`golden: ${s.title}`, (t) => {
    t.truthy(goldens[s.title], 'every scenario has a golden');
    t.is(addedBlocks(stateOf(s), s.opts, s.id === 'ipv6' ? 'ip6' : 'ip'), dedent(goldens[s.title] ?? ''));
  });
}
