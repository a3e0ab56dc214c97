// Backend.describeService in every mode: one service port's objects, with
// its NodePort entries, nothing of any other Service, the same among 10 or
// 2,000 others, read without walking the table, and line for line what the
// full render holds.
import test from 'ava';
import type { Backend, ModeOptions } from '../modes/backend.ts';
import { modeOf, type ProxyMode } from '../modes/registry.ts';
import { silentLogger } from '../lib/log.ts';
import type { NodeState, ServicePortState } from '../proxy/model.ts';
import { ep, nodeState, svc } from './helpers/state.ts';

const opts: ModeOptions = { families: [4, 6], clusterCIDRs: ['10.244.0.0/16'], masqueradeAll: false, nodePortAddresses: [], masqueradeBit: 14 };
const backend = (mode: ProxyMode): Backend => modeOf(mode).create(opts, silentLogger());

const target = svc({
  name: 'shop/cart:http', clusterIP: '10.0.0.5', port: 80, nodePort: 30080,
  clusterEndpoints: [ep('10.244.0.7', 8080, { isLocal: true }), ep('10.244.3.9', 8080)],
});

/** Other Services in 10.1/16 with endpoints in 10.2/16, NodePorts from 31000, every layout variant. */
function others(n: number): ServicePortState[] {
  const out: ServicePortState[] = [];
  for (let i = 0; i < n; i++) {
    const ip = (net: number): string => `10.${net}.${(i >> 8) & 255}.${i & 255}`;
    const eps = [ep(ip(2), 8080, { isLocal: i % 2 === 0 }), ep(ip(2), 9090)];
    out.push(svc({
      name: `ns${i % 7}/other-${i}:p`, clusterIP: ip(1), port: 80, nodePort: 31000 + i,
      clusterEndpoints: eps, localEndpoints: eps.filter((e) => e.isLocal),
      affinityTimeoutSeconds: i % 3 === 0 ? 600 : 0, externalPolicyLocal: i % 3 === 1,
    }));
  }
  return out;
}

/** The set and elements of an nft "add element" line (elements never hold a comma: the renderer refuses them). */
function elementLine(line: string): { set: string; elements: string[] } | undefined {
  const m = /^add element \S+ \S+ (\S+) \{ (.*) \}$/.exec(line);
  return m ? { set: m[1], elements: m[2].split(', ') } : undefined;
}

const mentionsOther = /other-|\b10\.[12]\.|\b3[1-9]\d{3}\b/;

for (const mode of ['iptables', 'nftables', 'userspace'] as const) {
  test(`${mode}: a NodePort Service's lines include its NodePort and nothing of another Service`, (t) => {
    const b = backend(mode);
    const lines = b.describeService!(nodeState([target, ...others(10)]), target.key);
    t.true(lines.length > 0);
    const np = lines.filter((l) => l.includes('30080'));
    if (mode === 'nftables') {
      t.true(np.some((l) => /^add element ip kproxy service-nodeports \{ tcp \. 30080 : goto nodeport-2 \}$/.test(l)), np.join('\n'));
      t.true(np.some((l) => l === 'add element ip kproxy nodeport-endpoints-tcp { 30080 . 0 : 10.244.0.7 . 8080 }'), np.join('\n'));
      t.true(np.some((l) => l === 'add element ip kproxy nodeport-endpoints-tcp { 30080 . 1 : 10.244.3.9 . 8080 }'), np.join('\n'));
      // One element per line: never a batch line listing several.
      for (const l of lines.filter((x) => x.startsWith('add element'))) {
        t.is(elementLine(l)?.elements.length, 1, l);
      }
    } else if (mode === 'userspace') {
      // Without the node's addresses (explain reads no kernel) a NodePort shows on *.
      t.deepEqual(np, ['listen TCP *:30080 "shop/cart:http" rr -> 10.244.0.7:8080 10.244.3.9:8080'], lines.join('\n'));
    } else {
      t.true(np.some((l) => /^-A KUBE-NODEPORTS -p tcp .*--dport 30080 -j KUBE-EXT-[A-Z2-7]{16}$/.test(l)), np.join('\n'));
    }
    t.deepEqual(lines.filter((l) => mentionsOther.test(l)), []);
  });

  test(`${mode}: the lines are the same among 2,000 other Services as among 10`, (t) => {
    const b = backend(mode);
    const few = b.describeService!(nodeState([target, ...others(10)]), target.key);
    const many = b.describeService!(nodeState([...others(2000), target]), target.key);
    t.deepEqual(many, few);
  });

  test(`${mode}: describing one port looks up only that port`, (t) => {
    const services = new NoWalkMap([target, ...others(2000)].map((s) => [s.key, s]));
    t.throws(() => [...services.values()], { message: /walked the whole table/ });
    const state: NodeState = { nodeName: 'node-a', nodeIPs: ['192.168.0.2'], services };
    const lines = backend(mode).describeService!(state, target.key);
    t.true(lines.length > 0);
    t.deepEqual(backend(mode).describeService!(state, '4/shop/nope:http/TCP'), []);
  });

  test(`${mode}: every port's lines are in the full render, and together they are all its per-Service lines`, (t) => {
    const b = backend(mode);
    const state = nodeState([target, ...others(12)]);
    const described = [...state.services.keys()].flatMap((k) => b.describeService!(state, k));
    const rendered = b.render(state).split('\n');
    if (mode === 'userspace') {
      // One line per address and per listener: the render is the ports' lines, each once.
      t.deepEqual([...new Set(described)].sort(), rendered.filter((l) => l !== '' && !l.startsWith('#')).sort());
    } else if (mode === 'nftables') {
      // The render batches 1,000 elements per line: compare element by element.
      const elementLines = (ls: string[]): string[] => ls.filter((l) => l.startsWith('add element')).flatMap((l) => {
        const c = elementLine(l);
        return c ? c.elements.map((e) => `${c.set} ${e}`) : [];
      });
      // The hairpin set holds each address once, whichever ports use it.
      t.deepEqual([...new Set(elementLines(described))].sort(), elementLines(rendered).sort());
      const rest = described.filter((l) => !l.startsWith('add element'));
      const missing = rest.filter((l) => !rendered.includes(l));
      t.deepEqual(missing, []);
    } else {
      const perService = /^-A (KUBE-SERVICES|KUBE-NODEPORTS|KUBE-EXTERNAL-SERVICES|KUBE-PROXY-FIREWALL|KUBE-(SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}) /;
      const tail = 'NOTE: this must be the last rule';
      t.deepEqual(described.filter((l) => l.startsWith('-A ')).sort(), rendered.filter((l) => perService.test(l) && !l.includes(tail)).sort());
      const ipset = described.filter((l) => l.startsWith('add KUBE-LOOP-BACK '));
      t.true(ipset.length > 0);
      for (const l of ipset) t.true(rendered.includes(l.replace('add KUBE-LOOP-BACK ', 'add KUBE-LOOP-BACK-T ')), l);
    }
  });

  test(`${mode}: a family the backend does not program yields nothing; IPv6 stays IPv6`, (t) => {
    const v6 = svc({ name: 'shop/cart:http', clusterIP: 'fd00::5', port: 80, nodePort: 30080, clusterEndpoints: [ep('fd00:244::7', 8080)] });
    const state = nodeState([target, v6]);
    const only4 = modeOf(mode).create({ ...opts, families: [4] }, silentLogger());
    t.deepEqual(only4.describeService!(state, v6.key), []);
    const lines = backend(mode).describeService!(state, v6.key);
    t.true(lines.some((l) => l.includes('fd00::5')), lines.join('\n'));
    t.deepEqual(lines.filter((l) => /10\.0\.0\.5|10\.244\./.test(l)), []);
  });
}

/** A services map that fails any walk over it: only get() and has() are allowed. */
class NoWalkMap<K, V> extends Map<K, V> {
  private walk(): never {
    throw new Error('describeService walked the whole table');
  }
  override [Symbol.iterator](): MapIterator<[K, V]> {
    return this.walk();
  }
  override entries(): MapIterator<[K, V]> {
    return this.walk();
  }
  override keys(): MapIterator<K> {
    return this.walk();
  }
  override values(): MapIterator<V> {
    return this.walk();
  }
  override forEach(): void {
    this.walk();
  }
}
