/**
 * Kubernetes objects from a file (`edgemesh sidecar --objects FILE`): YAML or JSON, one or
 * many documents, `kind: List` (or any `*List` with items) flattened, other kinds ignored.
 * The catalog is built by the same code the gateway uses (from-objects.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import YAML from 'yaml';
import { EdgemeshError, ErrorCodes } from '../errors.ts';
import { buildCatalog } from './from-objects.ts';
import type { Catalog } from './types.ts';

export const MAX_OBJECTS_FILE_BYTES = 64 * 1024 * 1024;
export const MAX_OBJECTS = 200_000;

const catalogError = (message: string) => new EdgemeshError(ErrorCodes.CATALOG, message);

/** Parses file text into a flat list of objects; throws a CATALOG error naming the document. */
export function parseObjectsText(text: string, source: string): unknown[] {
  const trimmed = text.trimStart();
  let docs: unknown[];
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      const doc = JSON.parse(text);
      docs = Array.isArray(doc) ? doc : [doc];
    } catch (err) {
      throw catalogError(`${source}: not valid JSON: ${(err as Error).message}`);
    }
  } else {
    const parsed = YAML.parseAllDocuments(text);
    const list = Array.isArray(parsed) ? parsed : [parsed];
    docs = [];
    for (const [i, doc] of list.entries()) {
      if (doc.errors.length > 0) {
        throw catalogError(`${source}: YAML document ${i + 1}: ${doc.errors[0].message.split('\n')[0]}`);
      }
      // maxAliasCount bounds "billion laughs" alias expansion.
      try {
        docs.push(doc.toJS({ maxAliasCount: 100 }));
      } catch (err) {
        throw catalogError(`${source}: YAML document ${i + 1}: ${(err as Error).message}`);
      }
    }
  }
  const objects: unknown[] = [];
  const add = (obj: unknown, where: string) => {
    if (obj === null || obj === undefined) return; // empty document (e.g. a trailing ---)
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      throw catalogError(
        `${source}: ${where} is not a Kubernetes object (a mapping with kind and apiVersion)`,
      );
    }
    const o = obj as { kind?: unknown; items?: unknown };
    if (typeof o.kind === 'string' && o.kind.endsWith('List') && Array.isArray(o.items)) {
      for (const [j, item] of o.items.entries()) add(item, `${where} items[${j}]`);
      return;
    }
    if (objects.length >= MAX_OBJECTS) throw catalogError(`${source}: more than ${MAX_OBJECTS} objects`);
    objects.push(obj);
  };
  for (const [i, doc] of docs.entries()) add(doc, `document ${i + 1}`);
  return objects;
}

/** Reads an objects file and builds its catalog; problems (skipped objects) are returned for logging. */
export async function catalogFromObjectsFile(
  path: string,
  opts: { clusterDomain?: string } = {},
): Promise<{ catalog: Catalog; problems: string[]; ignored: number }> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    throw catalogError(`${path}: cannot read: ${(err as Error).message}`);
  }
  if (size > MAX_OBJECTS_FILE_BYTES)
    throw catalogError(`${path}: larger than ${MAX_OBJECTS_FILE_BYTES} bytes`);
  const text = await readFile(path, 'utf8').catch((err: Error) => {
    throw catalogError(`${path}: cannot read: ${err.message}`);
  });
  return buildCatalog(parseObjectsText(text, path), opts);
}
