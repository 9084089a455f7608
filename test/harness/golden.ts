import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

/**
 * Golden files: `expectGolden` compares text with `<dir>/<file>` (vitest prints the diff);
 * REFRESH_GOLDEN=1 rewrites them instead. `unusedGoldens` lists golden files no case used,
 * so a renamed or deleted case cannot leave a stale expectation behind.
 */
export class GoldenDir {
  readonly dir: string;
  readonly #used = new Set<string>();

  constructor(dir: string) {
    this.dir = dir;
  }

  expect(file: string, actual: string): void {
    this.#used.add(file);
    const path = join(this.dir, file);
    if (process.env.REFRESH_GOLDEN === '1') {
      mkdirSync(this.dir, { recursive: true });
      writeFileSync(path, actual);
      return;
    }
    if (!existsSync(path))
      throw new Error(`missing golden file ${path}; run with REFRESH_GOLDEN=1 to create it`);
    expect(actual, `golden ${file} differs (REFRESH_GOLDEN=1 rewrites it)`).toBe(readFileSync(path, 'utf8'));
  }

  /** Golden files in the folder matching `suffix` that no `expect` call used. */
  unused(suffix: string): string[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir).filter((f) => f.endsWith(suffix) && !this.#used.has(f));
  }
}
