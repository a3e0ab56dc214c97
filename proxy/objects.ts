// Reads Kubernetes objects from YAML text as kubectl writes it: several
// documents separated by "---", and/or "kind: List" wrappers (kubectl get
// -o yaml). Only Services, EndpointSlices and Nodes are kept.
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';

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
  const out: ParsedObjects = { services: [], slices: [], nodes: [], errors: [], ignored: [] };
  const docs = parseAllDocuments(text);
  // A file with a single broken document yields an EmptyStream-like object without errors.
  const list = Array.isArray(docs) ? docs : [];
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
  list.forEach((doc, i) => {
    const where = `document ${i + 1}`;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) out.errors.push(`${where}: ${e.message.split('\n')[0]}`);
      return;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return; // empty document (e.g. a trailing "---")
    take(value, where);
  });
  return out;
}
