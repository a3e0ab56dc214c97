// Chain names derived exactly as kube-proxy derives them, so a Service's
// chains have the same name on every node and across restarts:
// base32(sha256(servicePortName + lowercase protocol)), first 16 characters.
import { createHash } from 'node:crypto';
import { hostPort } from '../../lib/net.ts';
import type { Protocol } from '../../proxy/model.ts';

const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(buf: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of buf) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

function hash16(text: string): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, 16);
}

export function portProtoHash(servicePortName: string, protocol: Protocol): string {
  return hash16(servicePortName + protocol.toLowerCase());
}

export const svcChain = (name: string, p: Protocol): string => `KUBE-SVC-${portProtoHash(name, p)}`;
export function sepChain(name: string, p: Protocol, ip: string, port: number): string {
  return `KUBE-SEP-${hash16(name + p.toLowerCase() + hostPort(ip, port))}`;
}

/** Prefixes of the per-Service chains kproxy creates; any chain with one of them is kproxy's. */
export const serviceChainPrefixes = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'] as const;

export const chains = {
  services: 'KUBE-SERVICES',
  nodePorts: 'KUBE-NODEPORTS',
  externalServices: 'KUBE-EXTERNAL-SERVICES',
  firewall: 'KUBE-PROXY-FIREWALL',
  forward: 'KUBE-FORWARD',
  postrouting: 'KUBE-POSTROUTING',
  markMasq: 'KUBE-MARK-MASQ',
  canary: 'KUBE-PROXY-CANARY',
} as const;

/** The ipset holding endpoint ip,proto:port,ip triples for hairpin masquerade. */
export function loopbackSet(family: 4 | 6): string {
  return family === 4 ? 'KUBE-LOOP-BACK' : 'KUBE-6-LOOP-BACK';
}
