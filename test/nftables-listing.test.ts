// normalizeListing makes two `nft list table` texts comparable: the kernel
// prints set elements in hash order and may add handles.
import test from 'ava';
import { normalizeListing } from '../modes/nftables/listing.ts';
import { dedent } from './fixtures/nftables/golden.ts';

const kernelOrder = `table ip kproxy {
\tmap service-ips {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = { 10.96.0.10 . tcp . 80 : goto cluster-2,
\t\t\t     10.96.0.2 . udp . 53 : goto cluster-1 }
\t}

\tchain services { # handle 3
\t\tip daddr . meta l4proto . th dport vmap @service-ips # handle 7
\t}

\tset hairpin {
\t\ttype ipv4_addr . ipv4_addr
\t}
}
`;

test('objects sorted by name, elements one per line in order, handles dropped', (t) => {
  t.is(normalizeListing(kernelOrder), dedent(`
    table ip kproxy
      chain services
        ip daddr . meta l4proto . th dport vmap @service-ips
      map service-ips
        type ipv4_addr . inet_proto . inet_service : verdict
        element 10.96.0.2 . udp . 53 : goto cluster-1
        element 10.96.0.10 . tcp . 80 : goto cluster-2
      set hairpin
        type ipv4_addr . ipv4_addr
  `));
});

test('element order does not matter, content does', (t) => {
  const swapped = kernelOrder.replace('10.96.0.10 . tcp . 80 : goto cluster-2,\n\t\t\t     10.96.0.2 . udp . 53 : goto cluster-1', '10.96.0.2 . udp . 53 : goto cluster-1,\n\t\t\t     10.96.0.10 . tcp . 80 : goto cluster-2');
  t.not(swapped, kernelOrder);
  t.is(normalizeListing(swapped), normalizeListing(kernelOrder));
  t.not(normalizeListing(kernelOrder.replace('goto cluster-1', 'goto cluster-3')), normalizeListing(kernelOrder));
});
