import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * Test-only: the Debian `prometheus` package's binaries (promtool, prometheus), which
 * scripts/setup installs. A missing one is an error naming it and the fix, never a skip:
 * the alert-rule and dashboard tests are worth nothing if they quietly do not run.
 */
export function prometheusBinary(name: 'promtool' | 'prometheus'): string {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    if (dir === '') continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  throw new Error(
    `${name} not found on PATH or in /usr/bin: it comes from Debian's \`prometheus\` package; run scripts/setup (it installs it), or apt-get install prometheus`,
  );
}

/** Runs a binary to completion: its exit code and output (never throws for a non-zero exit). */
export function runTool(
  bin: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      args,
      { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const output = `${stdout}${stderr}`;
        if (err && typeof (err as { code?: unknown }).code !== 'number')
          reject(new Error(`${bin}: ${err.message}`));
        else resolve({ code: err ? ((err as { code: number }).code ?? 1) : 0, output });
      },
    );
  });
}
