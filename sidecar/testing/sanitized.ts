/**
 * The sanitized (ASan/UBSan) native addons for netns tests that load them in a child process:
 * the build (sidecar/native/build.sh with EDGEMESH_NATIVE_SANITIZE=1; a fresh clone has only
 * the plain addons, so each test file builds them rather than count on another having done
 * it) and the environment such a process needs.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** Builds build/l4-sanitized.node and build/udp-sanitized.node (and the plain ones). */
export function buildSanitizedAddons(): void {
  execFileSync('sh', [join(import.meta.dirname, '../native/build.sh')], {
    env: { ...process.env, EDGEMESH_NATIVE_SANITIZE: '1' },
  });
}

/**
 * `KEY=VALUE` lines for `env`: the ASan runtime preloaded (Node itself is not instrumented),
 * any report aborting the process into a file under `reportDir` (asan.*, ubsan.*). Leaks are
 * not checked: Node leaks at exit by design.
 */
export function sanitizerEnv(reportDir: string): string[] {
  const libasan = execFileSync('gcc', ['-print-file-name=libasan.so']).toString().trim();
  return [
    `LD_PRELOAD=${libasan}`,
    `ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:log_path=${reportDir}/asan`,
    `UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=${reportDir}/ubsan`,
  ];
}
