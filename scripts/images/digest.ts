// The cache key of an image: its input files by content (and path), plus facts.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

export function digestFile(path: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.alloc(1 << 20);
  const fd = openSync(path, 'r');
  try {
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

export function digestInputs(files: string[], facts: string[] = []): string {
  const hash = createHash('sha256');
  for (const f of files) hash.update(`file ${f} ${digestFile(f)}\n`);
  for (const f of facts) hash.update(`fact ${f}\n`);
  return hash.digest('hex');
}
