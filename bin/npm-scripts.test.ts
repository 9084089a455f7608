import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

// `npm run <script>` that runs a file: the file must exist (`npm run edgemesh` once pointed at
// a cli/main.ts that never did).
const root = new URL('../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as {
  scripts: Record<string, string>;
};

describe('package.json scripts', () => {
  it('every `node FILE` script names a file in the checkout', () => {
    const runs = Object.entries(pkg.scripts).flatMap(([name, line]) => {
      const m = /^node\s+(\S+\.ts)\b/.exec(line);
      return m ? [{ name, file: m[1] }] : [];
    });
    expect(runs.map((r) => r.name)).toContain('edgemesh');
    for (const { name, file } of runs)
      expect(existsSync(new URL(file, root)), `npm run ${name}: ${file}`).toBe(true);
  });
});
