// Brings `nft list table` text to one canonical form so two listings (the
// kernel's and the fake kernel's, or two states) compare as text: objects
// sorted by name, set elements sorted (the kernel's hash order is arbitrary)
// and rule handles dropped.
import { splitTopLevel } from './objects.ts';

const collator = new Intl.Collator('en', { numeric: true });

interface Block {
  readonly header: string;
  readonly lines: string[];
}

export function normalizeListing(text: string): string {
  const tables: string[] = [];
  let table: string | undefined;
  let blocks: Block[] = [];
  let block: Block | undefined;
  let elements: string | undefined;
  const flush = (): void => {
    if (table !== undefined) {
      blocks.sort((a, b) => collator.compare(a.header, b.header));
      tables.push([table, ...blocks.flatMap((b) => [`  ${b.header}`, ...b.lines.map((l) => `    ${l}`)])].join('\n'));
    }
  };
  for (const raw of text.split('\n')) {
    const line = raw.trim().replace(/ # handle \d+$/, '');
    if (line === '') continue;
    if (elements !== undefined) {
      elements += ' ' + line;
      if (line.endsWith('}')) {
        addElements(block!, elements);
        elements = undefined;
      }
      continue;
    }
    if (/^table /.test(line)) {
      flush();
      table = line.replace(/ \{$/, '');
      blocks = [];
      continue;
    }
    if (/^(chain|set|map) \S+ \{$/.test(line)) {
      block = { header: line.replace(/ \{$/, ''), lines: [] };
      blocks.push(block);
      continue;
    }
    if (line === '}') continue;
    if (line.startsWith('elements = {')) {
      elements = line.slice('elements = '.length);
      if (line.endsWith('}')) {
        addElements(block!, elements);
        elements = undefined;
      }
      continue;
    }
    block?.lines.push(line);
  }
  flush();
  return tables.join('\n') + '\n';
}

function addElements(block: Block, text: string): void {
  const items = splitTopLevel(text.trim().slice(1, -1)).sort(collator.compare);
  for (const item of items) block.lines.push(`element ${item}`);
}

/**
 * The chain names `nft list chains FAMILY` shows for one table. That listing
 * carries chain declarations only, so nft does not fetch the table's sets
 * and maps: it stays cheap however many Services the maps hold.
 */
export function chainsInListing(listing: string, family: string, table: string): Set<string> {
  const names = new Set<string>();
  let inside = false;
  for (const line of listing.split('\n')) {
    const header = /^table (\S+) (\S+) \{$/.exec(line);
    if (header) {
      inside = header[1] === family && header[2] === table;
      continue;
    }
    const chain = inside ? /^\tchain (\S+) \{$/.exec(line) : null;
    if (chain) names.add(chain[1]);
  }
  return names;
}
