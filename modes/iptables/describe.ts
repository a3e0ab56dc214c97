// The rules of one service port, from the same serviceOutput() a sync
// writes: its lines in the shared chains, its own chains (declared and
// filled as iptables-save shows them, in the order a packet meets them)
// and its loopback ipset entries. Built from that port alone, so it costs
// the same among 10 or 10,000 Services.
import type { NodeState } from '../../proxy/model.ts';
import { dispatchChains, serviceOutput, type FamilyOptions, type Table } from './layout.ts';
import { loopbackSet } from './names.ts';
import { RuleSyntaxError } from './rule.ts';

const tableOrder: readonly Table[] = ['filter', 'nat'];
/** A packet goes FW → EXT → SVC/SVL → SEP. */
const chainOrder = ['KUBE-FW-', 'KUBE-EXT-', 'KUBE-SVC-', 'KUBE-SVL-', 'KUBE-SEP-'];
const rank = (name: string): number => chainOrder.findIndex((p) => name.startsWith(p));

export function describeServicePort(state: NodeState, key: string, famOpts: ReadonlyMap<number, FamilyOptions>): string[] {
  const s = state.services.get(key);
  const o = s && famOpts.get(s.family);
  if (!s || !o) return [];
  let out: ReturnType<typeof serviceOutput>;
  try {
    out = serviceOutput(s, o);
  } catch (e) {
    if (e instanceof RuleSyntaxError) return [`# left out of the batch: ${e.message}`];
    throw e;
  }
  const own = [...out.chains].sort((a, b) => rank(a.name) - rank(b.name) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // ipset restore syntax, for the set the hairpin rule in KUBE-POSTROUTING
  // matches; ahead of the table sections, as the sync runs it.
  const lines = out.loopback.map((e) => `add ${loopbackSet(s.family)} ${e}`);
  for (const table of tableOrder) {
    const section: string[] = [];
    for (const c of own) if (c.table === table) section.push(`:${c.name} - [0:0]`);
    for (const dc of dispatchChains) {
      const [t, chain] = dc.split(' ');
      if (t !== table) continue;
      for (const spec of out.dispatch.get(dc) ?? []) section.push(`-A ${chain} ${spec}`);
    }
    for (const c of own) if (c.table === table && c.count > 0) section.push(...c.text.split('\n'));
    if (section.length) lines.push(`*${table}`, ...section);
  }
  return lines;
}
