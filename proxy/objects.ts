// Reads Kubernetes objects from YAML text as kubectl writes it: several
// documents separated by "---", and/or "kind: List" wrappers (kubectl get
// -o yaml). Only Services, EndpointSlices and Nodes are kept.
//
// Documents are composed and converted one at a time: the syntax tree of a
// document dies as soon as its plain object exists. Parsing them all first
// (parseAllDocuments) keeps every tree alive to the end of a large file, long
// enough for V8 to move them all to the old generation (about 34 MB per read
// of a 1,000-Service file), where they pile up until a full collection.
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { Composer, Parser, parseAllDocuments, type Document } from 'yaml';

export interface ParsedObjects {
  services: V1Service[];
  slices: V1EndpointSlice[];
  nodes: V1Node[];
  /** Syntax and shape errors, each naming its document; non-empty means the text is unusable. */
  errors: string[];
  /** "kind namespace/name" of objects of other kinds, skipped. */
  ignored: string[];
}

type Obj = Record<string, unknown> & { kind?: unknown; apiVersion?: unknown; metadata?: Record<string, unknown> };

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(o: Obj): string {
  const ns = typeof o.metadata?.namespace === 'string' ? `${o.metadata.namespace}/` : '';
  return `${String(o.kind ?? '(no kind)')} ${ns}${String(o.metadata?.name ?? '(no name)')}`;
}

export function parseObjects(text: string): ParsedObjects {
  // parseAllDocuments words syntax errors with their line and column: the
  // rare broken file is read again that way.
  return objectsOf(new Composer().compose(new Parser().parse(text)), true) ?? objectsOf(parseAllDocuments(text), false)!;
}

/** The objects of a stream of documents; undefined at the first syntax error when `stopAtSyntaxError`. */
function objectsOf(docs: Iterable<Document.Parsed>, stopAtSyntaxError: boolean): ParsedObjects | undefined {
  const out: ParsedObjects = { services: [], slices: [], nodes: [], errors: [], ignored: [] };
  const take = (o: unknown, where: string): void => {
    if (!isObject(o)) {
      out.errors.push(`${where}: not a Kubernetes object`);
      return;
    }
    if (o.kind === 'List' || (typeof o.kind === 'string' && o.kind.endsWith('List') && Array.isArray(o.items))) {
      if (!Array.isArray(o.items)) {
        out.errors.push(`${where}: ${String(o.kind)} has no items list`);
        return;
      }
      o.items.forEach((item, i) => take(item, `${where} items[${i}]`));
      return;
    }
    const kind = o.kind;
    const apiVersion = String(o.apiVersion ?? '');
    // kubectl applies objects without a namespace to "default"; so does this reader.
    const withNamespace = <T>(x: Obj): T =>
      (isObject(x.metadata) && x.metadata.namespace === undefined
        ? { ...x, metadata: { ...x.metadata, namespace: 'default' } }
        : x) as T;
    if (kind === 'Service' && apiVersion === 'v1') out.services.push(withNamespace<V1Service>(o));
    else if (kind === 'EndpointSlice' && apiVersion === 'discovery.k8s.io/v1') out.slices.push(withNamespace<V1EndpointSlice>(o));
    else if (kind === 'Node' && apiVersion === 'v1') out.nodes.push(o as V1Node);
    else out.ignored.push(`${describe(o)} (${apiVersion || 'no apiVersion'})`);
  };
  let i = 0;
  for (const doc of docs) {
    const where = `document ${++i}`;
    if (doc.errors.length > 0) {
      if (stopAtSyntaxError) return undefined;
      for (const e of doc.errors) out.errors.push(`${where}: ${e.message.split('\n')[0]}`);
      continue;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue; // empty document (e.g. a trailing "---")
    take(value, where);
  }
  return out;
}
