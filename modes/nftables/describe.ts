// The nft commands of one service port, from the same contribution() a
// sync applies: its own chains and sets, the shared spread chains it points
// at, and each of its map/set elements on a line of its own. Built from
// that port alone, so it costs the same among 10 or 10,000 Services.
import type { NodeState } from '../../proxy/model.ts';
import type { ModeOptions } from '../backend.ts';
import { spreadChain, tableName, type ChainDef, type FamilySyntax } from './layout.ts';
import { render, type Command } from './objects.ts';
import { checkedContribution, isRefused } from './service-rules.ts';

export function describeServicePort(state: NodeState, key: string, families: readonly FamilySyntax[], opts: ModeOptions): string[] {
  const s = state.services.get(key);
  const f = s && families.find((x) => x.family === s.family);
  if (!s || !f) return [];
  const c = checkedContribution(s, f, opts);
  if (isRefused(c)) return [`# left out of the table: ${c.reason}`];
  const w = { family: f.nft, table: tableName } as const;
  const cmds: Command[] = [];
  const chain = (def: ChainDef): void => {
    cmds.push({ verb: 'add', object: 'chain', ...w, name: def.name });
    for (const rule of def.rules) cmds.push({ verb: 'add', object: 'rule', ...w, chain: def.name, rule });
  };
  for (const set of c.sets) cmds.push({ verb: 'add', object: set.kind, ...w, name: set.name, spec: set.spec });
  for (const def of c.chains) chain(def);
  // Shared with every port of the same endpoint count; shown because the DNAT happens there.
  for (const name of c.shared) chain(spreadChain(f, opts, name));
  for (const e of c.elements) {
    cmds.push({ verb: 'add', object: 'element', ...w, set: e.set, elements: [e.value === undefined ? { key: e.key } : { key: e.key, value: e.value }] });
  }
  return cmds.map(render);
}
