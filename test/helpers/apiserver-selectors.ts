// Field and label selectors as the API server parses them, limited to the
// equality-based forms. Anything else is rejected with a message, never
// silently ignored (a test must not pass because a filter was skipped).
import type { KubeObject } from './apiserver-store.ts';

export type Matcher = (obj: KubeObject) => boolean;

export class SelectorError extends Error {}

interface Requirement {
  readonly key: string;
  readonly op: '=' | '!=' | 'exists' | '!exists';
  readonly value?: string;
}

function parse(selector: string, what: string): Requirement[] {
  const reqs: Requirement[] = [];
  for (const raw of selector.split(',')) {
    const term = raw.trim();
    if (term === '') continue;
    let m: RegExpMatchArray | null;
    if ((m = term.match(/^([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)$/))) {
      reqs.push({ key: m[1], op: m[2] === '!=' ? '!=' : '=', value: m[3] });
    } else if (what === 'label' && (m = term.match(/^(!?)([^=!\s()]+)$/))) {
      reqs.push({ key: m[2], op: m[1] ? '!exists' : 'exists' });
    } else {
      throw new SelectorError(`unsupported ${what} selector term ${JSON.stringify(term)}`);
    }
  }
  return reqs;
}

const FIELDS: Record<string, (obj: KubeObject) => string> = {
  'metadata.name': (o) => o.metadata?.name ?? '',
  'metadata.namespace': (o) => o.metadata?.namespace ?? '',
};

export function fieldMatcher(selector: string | null): Matcher {
  if (!selector) return () => true;
  const reqs = parse(selector, 'field');
  for (const r of reqs) {
    if (!FIELDS[r.key]) throw new SelectorError(`field label not supported: ${r.key}`);
  }
  return (obj) => reqs.every((r) => (FIELDS[r.key](obj) === r.value) === (r.op === '='));
}

export function labelMatcher(selector: string | null): Matcher {
  if (!selector) return () => true;
  const reqs = parse(selector, 'label');
  return (obj) => {
    const labels = obj.metadata?.labels ?? {};
    return reqs.every((r) => {
      const has = Object.hasOwn(labels, r.key);
      switch (r.op) {
        case 'exists': return has;
        case '!exists': return !has;
        case '=': return has && labels[r.key] === r.value;
        case '!=': return !has || labels[r.key] !== r.value;
      }
    });
  };
}
