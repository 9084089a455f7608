/**
 * `edgemesh check`'s results and their text, as `linkerd check` prints them: a heading per
 * group, one line per check (✔ passed, ‼ warning, × failed), what was found under a failed or
 * warned check, and a hint naming what to do. `-o json` prints the results themselves. Pure.
 */

export type CheckStatus = 'pass' | 'warn' | 'fail';

export interface CheckResult {
  group: string;
  /** Stable id for scripts (`-o json`). */
  id: string;
  status: CheckStatus;
  /** What holds (pass) or what does not (warn, fail), one line. */
  message: string;
  /** Findings, one per line: the pods, nodes, namespaces concerned. */
  details?: string[];
  /** What to do, for warn and fail. */
  hint?: string;
}

const MARK: Record<CheckStatus, string> = { pass: '✔', warn: '‼', fail: '×' };

/** Exit code: 0 only when nothing failed (warnings do not fail it, as with linkerd check). */
export const checkExitCode = (results: readonly CheckResult[]): number =>
  results.some((r) => r.status === 'fail') ? 1 : 0;

export function formatChecks(results: readonly CheckResult[]): string {
  const out: string[] = [];
  let group: string | undefined;
  for (const r of results) {
    if (r.group !== group) {
      if (group !== undefined) out.push('');
      out.push(r.group, '-'.repeat(r.group.length));
      group = r.group;
    }
    out.push(`${MARK[r.status]} ${r.message}`);
    if (r.status === 'pass') continue;
    for (const d of r.details ?? []) out.push(`    ${d}`);
    if (r.hint) out.push(`    hint: ${r.hint}`);
  }
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  out.push(
    '',
    failed > 0
      ? `Status check results are × (${failed} failed${warned ? `, ${warned} warning${warned === 1 ? '' : 's'}` : ''} of ${results.length})`
      : `Status check results are ✔${warned ? ` (${warned} warning${warned === 1 ? '' : 's'})` : ''}`,
  );
  return `${out.join('\n')}\n`;
}
