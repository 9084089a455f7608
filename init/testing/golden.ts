import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

/**
 * Golden files: `<dir>/<name>.golden` holds the expected text. REFRESH_GOLDEN=1 rewrites
 * them; otherwise a mismatch fails with vitest's line diff.
 */
export const refreshing = process.env.REFRESH_GOLDEN === '1';

export function expectGolden(dir: string, name: string, actual: string): void {
  const path = join(dir, `${name}.golden`);
  if (refreshing) {
    writeFileSync(path, actual);
    return;
  }
  if (!existsSync(path)) throw new Error(`missing golden file ${path}: run with REFRESH_GOLDEN=1`);
  expect(actual, `golden ${path} (REFRESH_GOLDEN=1 rewrites it)`).toBe(readFileSync(path, 'utf8'));
}

/** Golden files in `dir` that no case in `names` claims (a stale file hides a dropped case). */
export function unusedGoldens(dir: string, names: readonly string[]): string[] {
  const wanted = new Set(names.map((n) => `${n}.golden`));
  return readdirSync(dir).filter((f) => f.endsWith('.golden') && !wanted.has(f));
}
