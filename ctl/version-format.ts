/**
 * `edgemesh version`'s text output (the JSON output is the report itself). Pure: the golden
 * tests in version.test.ts render fixed reports.
 */
import { shortCommit } from '../lib/build-info.ts';
import type { ImageGroup, VersionReport } from './version-report.ts';

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows)
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}

/** The client line alone: `edgemesh --version` and `version --client`. */
export function clientLine(client: VersionReport['client']): string {
  const commit =
    client.commit === 'unknown'
      ? client.source === 'checkout'
        ? 'commit unknown (running from a checkout)'
        : 'commit unknown (the image was built without git)'
      : `commit ${shortCommit(client)}`;
  return `edgemesh ${client.version}, ${commit}, node ${client.nodeVersion}`;
}

const versionCell = (g: ImageGroup) => (g.version ?? 'unknown') + (g.build ? ` (build ${g.build})` : '');
const skewCell = (g: ImageGroup) =>
  g.skew === 'same' ? '' : g.skew === 'unknown' ? 'version unknown' : `${g.skew} than the client`;

export function formatVersionReport(r: VersionReport): string {
  const out = [`Client:  ${clientLine(r.client)}`];
  if (r.server)
    out.push(`Server:  Kubernetes ${r.server.kubernetes} at ${r.server.url} (${r.server.source})`);
  if (r.parts) {
    out.push('', `Installation (namespace ${r.namespace ?? '?'}):`);
    const rows: string[][] = [['PART', 'VERSION', 'READY', 'IMAGE', 'NOTE']];
    for (const p of r.parts) {
      if (p.images.length === 0) rows.push([p.part, '-', '0/0', '-', p.notes.join('; ')]);
      p.images.forEach((g, i) => {
        const unready =
          g.unready.length === 0
            ? ''
            : `not ready: ${g.unready.join(', ')}${g.pods - g.ready > g.unready.length ? ', …' : ''}`;
        const notes = [skewCell(g), unready, ...(i === 0 ? p.notes : [])].filter(Boolean).join('; ');
        rows.push([p.part, versionCell(g), `${g.ready}/${g.pods}`, g.image, notes]);
      });
    }
    out.push(...table(rows).map((l) => `  ${l}`));
    if (r.parts.every((p) => p.images.length === 0))
      out.push(`  no edgemesh pods in ${r.namespace ?? '?'}: not installed here, or in another --namespace`);
  }
  if (r.sidecars) {
    const s = r.sidecars;
    out.push('', `Sidecars (${s.total} injected pod${s.total === 1 ? '' : 's'}, all namespaces):`);
    out.push(
      'why' in s.injected
        ? `  injecting now: cannot tell (${s.injected.why}); sidecars compared with the client only`
        : `  injecting now: ${s.injected.image} (${s.injected.from})`,
    );
    if (s.images.length > 0) {
      const rows: string[][] = [['VERSION', 'PODS', 'READY', 'IMAGE', 'NOTE']];
      for (const g of s.images) {
        const notes = [skewCell(g), g.notInjectedImage ? 'not the injected image' : '']
          .filter(Boolean)
          .join('; ');
        rows.push([versionCell(g), String(g.pods), String(g.ready), g.image, notes]);
      }
      out.push(...table(rows).map((l) => `  ${l}`));
    }
    if (s.pods.length > 0) {
      out.push('', 'Pods by sidecar:');
      const rows: string[][] = [['NAMESPACE/POD', 'NODE', 'VERSION', 'NOTE']];
      for (const p of s.pods) {
        const notes = [
          p.skew === 'same' ? '' : p.skew === 'unknown' ? 'version unknown' : `${p.skew} than the client`,
          p.notInjectedImage ? 'not the injected image' : '',
        ]
          .filter(Boolean)
          .join('; ');
        rows.push([`${p.namespace}/${p.name}`, p.node || '-', p.version ?? 'unknown', notes]);
      }
      out.push(...table(rows).map((l) => `  ${l}`));
    }
  }
  if (r.parts || r.sidecars) {
    out.push('');
    const compared =
      (r.parts ?? []).reduce((n, p) => n + p.images.length, 0) + (r.sidecars?.images.length ?? 0);
    if (compared === 0) out.push('Skew: nothing running to compare with the client.');
    else if (r.skew.length === 0) out.push(`Skew: none, everything runs ${r.client.version}.`);
    else {
      out.push(`Skew against the client (${r.client.version}):`);
      for (const s of r.skew) out.push(`  ${s}`);
      if (r.sidecars?.pods.some((p) => p.skew !== 'same' || p.notInjectedImage))
        out.push(
          '  (restart a workload to re-inject its pods: kubectl rollout restart deployment/NAME -n NS)',
        );
    }
  }
  for (const e of r.errors) out.push(`error: ${e}`);
  return `${out.join('\n')}\n`;
}
