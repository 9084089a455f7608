/**
 * The C UDP load generator and echo backend (bench/lib/udp-tool.c) that bench/udp.ts and
 * bench/udp-natlab.ts run in their namespaces, compiled once per run into a directory the
 * bench owns.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** What `udp-tool load` prints: datagrams sent and replies received, RTT percentiles of the replies. */
export interface LoadResult {
  sent: number;
  received: number;
  sendFailures: number;
  seconds: number;
  p50us: number;
  p99us: number;
}

/** Compiles the tool into `dir` (which must be readable by the uids that run it); returns its path. */
export function buildUdpTool(dir: string): string {
  const tool = join(dir, 'udp-tool');
  execFileSync('cc', ['-O2', '-o', tool, new URL('./udp-tool.c', import.meta.url).pathname]);
  return tool;
}

/** Parses the tool's one JSON line, refusing anything else with what it printed. */
export function parseLoad(stdout: string): LoadResult {
  let r: Partial<LoadResult>;
  try {
    r = JSON.parse(stdout) as Partial<LoadResult>;
  } catch {
    throw new Error(`udp-tool printed no result: ${stdout.slice(0, 500)}`);
  }
  for (const k of ['sent', 'received', 'sendFailures', 'seconds', 'p50us', 'p99us'] as const)
    if (typeof r[k] !== 'number') throw new Error(`udp-tool result without ${k}: ${stdout.slice(0, 500)}`);
  return r as LoadResult;
}
