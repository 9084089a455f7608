// `npm run bench [-- name ...]`: runs the named benchmarks (default: all) one after another,
// each in its own process so one's memory and JIT state cannot colour another's numbers.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

const here = new URL('.', import.meta.url).pathname;
const available = readdirSync(here)
  .filter(
    (f) => f.endsWith('.ts') && !['run.ts'].includes(f) && !f.endsWith('-server.ts') && !f.startsWith('_'),
  )
  .map((f) => f.replace(/\.ts$/, ''));
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !available.includes(w));
if (unknown.length > 0) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${available.join(', ')}`);
  process.exit(2);
}
let failed = 0;
for (const name of wanted.length > 0 ? wanted : available) {
  console.log(`\n=== bench/${name}.ts ===`);
  const r = spawnSync(process.execPath, [`${here}${name}.ts`], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed > 0 ? 1 : 0);
