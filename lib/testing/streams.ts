/** Test-only stream helpers. */
import { once } from 'node:events';
import type { Duplex } from 'node:stream';

/** Reads from a paused stream until `bytes` characters have come; resolves with them. */
export async function readText(stream: Duplex, bytes: number): Promise<string> {
  let got = '';
  while (got.length < bytes) {
    const chunk = stream.read();
    if (chunk) got += chunk.toString();
    else await once(stream, 'readable');
  }
  return got;
}
