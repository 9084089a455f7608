/**
 * Test-only (testing/ folders stay out of the image): the real `edgemesh gateway` process in
 * a lab namespace, started on a persisted catalog with its API unreachable (so only that
 * catalog is served), ready once its sidecar listener is.
 */
import type { ChildProcess } from 'node:child_process';
import type { Catalog } from '../../lib/catalog/types.ts';
import { EDGEMESH_BIN, type NetnsLab, waitFor } from '../../test/harness/netns.ts';
import { saveCatalog } from '../persist.ts';

export async function startGatewayProcess(
  lab: NetnsLab,
  ns: string,
  opts: { stateDir: string; catalog: Catalog; listen: string; onStderr: (chunk: string) => void },
): Promise<ChildProcess> {
  await saveCatalog(opts.stateDir, opts.catalog);
  const gateway = lab.spawn(ns, [
    EDGEMESH_BIN,
    'gateway',
    '--node-name=edge-n',
    `--state-dir=${opts.stateDir}`,
    `--listen=${opts.listen}`,
    '--api-server=http://127.0.0.1:1',
    '--metrics-port=15090',
  ]);
  let stderr = '';
  gateway.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
    opts.onStderr(c.toString());
  });
  await waitFor(
    () => stderr.includes('sidecar listener ready'),
    20_000,
    50,
    `gateway start (stderr: ${stderr})`,
  );
  return gateway;
}
