/**
 * Test-only (testing/ folders stay out of the image): the real `edgemesh gateway` process in
 * a lab namespace, started on a persisted catalog with its API unreachable (so only that
 * catalog is served), ready once its sidecar listener is.
 */
import type { ChildProcess } from 'node:child_process';
import type { Catalog } from '../../lib/catalog/types.ts';
import { EDGEMESH_BIN, type NetnsLab, waitFor } from '../../test/harness/netns.ts';
import { saveCatalog } from '../persist.ts';
import { GATEWAY_NODE_FLAGS } from '../tunnel/node-flags.ts';

const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const MAIN = new URL('../../bin/main.ts', import.meta.url).pathname;

export async function startGatewayProcess(
  lab: NetnsLab,
  ns: string,
  opts: {
    stateDir: string;
    catalog: Catalog;
    listen: string;
    onStderr: (chunk: string) => void;
    /** More flags (e.g. the tunnel's). */
    args?: string[];
    /** Run Node with the gateway's V8 flags, as the DaemonSet does (memory measurements). */
    shippedNodeFlags?: boolean;
    /** How long loading the catalog may take (a 10,000-service one: tens of seconds on a busy machine). */
    readyTimeoutMs?: number;
  },
): Promise<ChildProcess> {
  await saveCatalog(opts.stateDir, opts.catalog);
  const gateway = lab.spawn(ns, [
    ...(opts.shippedNodeFlags ? [NODE, ...GATEWAY_NODE_FLAGS, MAIN] : [EDGEMESH_BIN]),
    'gateway',
    '--node-name=edge-n',
    `--state-dir=${opts.stateDir}`,
    `--listen=${opts.listen}`,
    '--api-server=http://127.0.0.1:1',
    '--metrics-port=15090',
    ...(opts.args ?? []),
  ]);
  let stderr = '';
  gateway.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
    opts.onStderr(c.toString());
  });
  await waitFor(
    () => stderr.includes('sidecar listener ready'),
    opts.readyTimeoutMs ?? 20_000,
    50,
    `gateway start (stderr: ${stderr})`,
  );
  return gateway;
}
