import { spawn } from 'node:child_process';

/**
 * Runs one of test/cluster's build scripts (build-k8s.sh, build-helm.sh: they build a tool
 * once from the Go module proxy, then reuse the cache) and resolves with the last line it
 * printed, which names what was built; a failure carries the script's last stderr lines.
 */
export function lastLine(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.trim().split('\n').pop();
      if (code === 0 && line) resolve(line);
      else reject(new Error(`${script} exited ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}
