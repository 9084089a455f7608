import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { buildCatalog } from './from-objects.ts';
import { catalogFromObjectsFile, parseObjectsText } from './objects-file.ts';

const tmp = mkdtempSync(join(tmpdir(), 'emc-objects-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const yamlText = readFileSync(join(import.meta.dirname, 'testdata', 'clusterip-web.yaml'), 'utf8');
const objects = parseObjectsText(yamlText, 'clusterip-web.yaml');
const expected = buildCatalog(objects).catalog;

describe('objects files', () => {
  it('reads multi-document YAML, a JSON List, a JSON array and a YAML List the same way', async () => {
    const files: Record<string, string> = {
      'multi.yaml': yamlText,
      'list.json': JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
      'array.json': JSON.stringify(objects),
      'list.yaml': YAML.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
      'nested.yaml': `${YAML.stringify({ kind: 'ServiceList', apiVersion: 'v1', items: objects.slice(0, 1) })}---\n${YAML.stringify({ kind: 'List', items: objects.slice(1) })}---\n`,
    };
    for (const [name, text] of Object.entries(files)) {
      writeFileSync(join(tmp, name), text);
      const got = await catalogFromObjectsFile(join(tmp, name));
      expect(got.catalog, name).toEqual(expected);
    }
  });

  it('ignores other kinds and counts them', async () => {
    writeFileSync(
      join(tmp, 'mixed.yaml'),
      `${yamlText}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: y}\n`,
    );
    const got = await catalogFromObjectsFile(join(tmp, 'mixed.yaml'));
    expect(got.catalog).toEqual(expected);
    expect(got.ignored).toBe(2);
  });

  it('rejects broken files with a clear error', async () => {
    const bad: Array<[string, string, RegExp]> = [
      ['broken.json', '{"kind": "List", ', /broken\.json: not valid JSON/],
      ['broken.yaml', 'a: b\n---\nkind: [unclosed\n', /broken\.yaml: YAML document 2:/],
      ['scalar.yaml', 'just a string\n', /document 1 is not a Kubernetes object/],
      [
        'list-of-scalars.json',
        '{"kind":"List","items":[1]}',
        /document 1 items\[0\] is not a Kubernetes object/,
      ],
    ];
    for (const [name, text, message] of bad) {
      writeFileSync(join(tmp, name), text);
      await expect(catalogFromObjectsFile(join(tmp, name))).rejects.toThrow(message);
    }
    await expect(catalogFromObjectsFile(join(tmp, 'missing.yaml'))).rejects.toThrow(
      /missing\.yaml: cannot read/,
    );
  });

  it('does not expand YAML alias bombs', () => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x"]',
      'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
      'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
      'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
      'e: [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
    ].join('\n');
    expect(() => parseObjectsText(bomb, 'bomb.yaml')).toThrow(/bomb\.yaml: YAML document 1: .*alias/i);
  });
});
