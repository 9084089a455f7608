// `node scripts/strip-types.ts OUT_DIR [PART...]`: writes the runtime sources as .js with
// types stripped by Node's own stripper and `.ts` import specifiers rewritten to `.js`.
// The image ships these: running .ts directly makes every process (every sidecar) load
// the stripper, measured at ~25 MB private memory per pod (bench/memory.ts).
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { stripTypeScriptTypes } from 'node:module';
import { dirname, join } from 'node:path';

export const RUNTIME_PARTS = [
  'bin',
  'lib',
  'webhook',
  'init',
  'sidecar',
  'gateway',
  'tunnel-server',
  'signer',
  'ctl',
] as const;
const SKIPPED_DIRS = new Set(['node_modules', 'testdata', 'testing']);

/** Rewrites relative `.ts` specifiers in static and dynamic imports. */
export function rewriteSpecifiers(code: string): string {
  return code.replace(/(from\s+'|import\(\s*')(\.{1,2}\/[^']+)\.ts'/g, "$1$2.js'");
}

export function stripTree(root: string, outDir: string, parts: readonly string[] = RUNTIME_PARTS): string[] {
  const written: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel))) {
      const path = join(rel, name);
      if (statSync(join(root, path)).isDirectory()) {
        if (!SKIPPED_DIRS.has(name)) walk(path);
      } else if (name.endsWith('.ts') && !name.endsWith('.test.ts')) {
        const code = rewriteSpecifiers(stripTypeScriptTypes(readFileSync(join(root, path), 'utf8')));
        const out = join(outDir, path.replace(/\.ts$/, '.js'));
        mkdirSync(dirname(out), { recursive: true });
        writeFileSync(out, code);
        written.push(out);
      } else if (name.endsWith('.node')) {
        // A compiled addon (sidecar/native/build/l4.node) ships as it is.
        const out = join(outDir, path);
        mkdirSync(dirname(out), { recursive: true });
        copyFileSync(join(root, path), out);
        written.push(out);
      }
    }
  };
  for (const part of parts) walk(part);
  writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
  return written;
}

if (import.meta.main) {
  const [outDir, ...parts] = process.argv.slice(2);
  if (!outDir) {
    console.error('usage: node scripts/strip-types.ts OUT_DIR [PART...]');
    process.exit(2);
  }
  const root = new URL('..', import.meta.url).pathname;
  const files = stripTree(root, outDir, parts.length > 0 ? parts : RUNTIME_PARTS);
  console.log(`strip-types: ${files.length} files → ${outDir}`);
}
