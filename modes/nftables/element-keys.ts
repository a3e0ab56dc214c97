// Element keys as the kernel reports them (raw bytes, from the nf_tables
// event listener) turned back into the text kproxy's record keys them by
// ("10.96.0.10 . tcp . 80"). Only kproxy's own maps and sets are known:
// each field of a concatenation takes a multiple of 4 bytes (addresses in
// network order, a protocol in its first byte, a port in its first two,
// numgen's index as a host-order 32-bit number).
import { endianness } from 'node:os';
import { canonicalIP } from '../../lib/net.ts';
import { endpointsMap, maps, nodePortEndpointsMap, type FamilySyntax } from './layout.ts';

type Field = 'addr' | 'proto' | 'port' | 'index';

const l4 = ['tcp', 'udp', 'sctp'] as const;
const protoNames = new Map<number, string>([[6, 'tcp'], [17, 'udp'], [132, 'sctp']]);

function fieldsOf(set: string): readonly Field[] | undefined {
  switch (set) {
    case maps.serviceIPs: case maps.noEndpointServices: case maps.affinityRecord:
      return ['addr', 'proto', 'port'];
    case maps.serviceNodePorts: case maps.noEndpointNodePorts: case maps.affinityRecordNodePorts:
      return ['proto', 'port'];
    case maps.hairpin:
      return ['addr', 'addr'];
  }
  if (l4.some((p) => set === endpointsMap(p))) return ['addr', 'port', 'index'];
  if (l4.some((p) => set === nodePortEndpointsMap(p))) return ['port', 'index'];
  return undefined;
}

const little = endianness() === 'LE';

/**
 * The record's text of a raw key of `set` in the table of family `f`, or
 * undefined when the set is not one of kproxy's keyed sets or the bytes do
 * not fit its type (an interval, a catch-all, another length).
 */
export function decodeKey(f: FamilySyntax, set: string, hex: string): string | undefined {
  const fields = fieldsOf(set);
  if (!fields || !/^(?:[0-9a-f]{2})+$/.test(hex)) return undefined;
  const b = Buffer.from(hex, 'hex');
  const addrLen = f.family === 4 ? 4 : 16;
  const want = fields.reduce((n, x) => n + (x === 'addr' ? addrLen : 4), 0);
  if (b.length !== want) return undefined;
  const out: string[] = [];
  let at = 0;
  for (const x of fields) {
    if (x === 'addr') {
      out.push(f.family === 4 ? [...b.subarray(at, at + 4)].join('.') : canonicalIP(Array.from({ length: 8 }, (_, i) => b.readUInt16BE(at + 2 * i).toString(16)).join(':')));
      at += addrLen;
    } else if (x === 'proto') {
      const name = protoNames.get(b[at]);
      if (name === undefined) return undefined;
      out.push(name);
      at += 4;
    } else if (x === 'port') {
      out.push(String(b.readUInt16BE(at)));
      at += 4;
    } else {
      out.push(String(little ? b.readUInt32LE(at) : b.readUInt32BE(at)));
      at += 4;
    }
  }
  return out.join(' . ');
}
