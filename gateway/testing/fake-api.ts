/**
 * Test-only (testing/ folders stay out of the image): the smallest Kubernetes API a gateway
 * can list and watch, serving the objects of a file (YAML or JSON, as `edgemesh sidecar
 * --objects` reads). On SIGHUP it reads the file again and sends each open watch the changes
 * of its kind (ADDED / MODIFIED / DELETED), so a test changes the cluster by rewriting the
 * file. Selectors are ignored; every object has resourceVersion = the file's generation.
 *
 *   node gateway/testing/fake-api.ts --listen 10.61.0.1 --port 6443 --objects objects.yaml
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { parseObjectsText } from '../../lib/catalog/objects-file.ts';

type Obj = { kind?: string; metadata?: { namespace?: string; name?: string; resourceVersion?: string } };

/** Collection path → object kind, as the gateway's watcher asks (watcher.ts). */
const PATHS: Record<string, string> = {
  '/api/v1/services': 'Service',
  '/api/v1/endpoints': 'Endpoints',
  '/apis/discovery.k8s.io/v1/endpointslices': 'EndpointSlice',
  '/api/v1/pods': 'Pod',
  '/api/v1/nodes': 'Node',
  '/api/v1/namespaces': 'Namespace',
};

const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '6443' },
    objects: { type: 'string' },
  },
});
if (!values.objects) throw new Error('--objects FILE is required');
const file = values.objects;

let generation = 0;
let byKey = new Map<string, Obj>();
const watchers = new Set<{ kind: string; res: http.ServerResponse }>();

const keyOf = (o: Obj) => `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

function load(): void {
  generation++;
  const next = new Map<string, Obj>();
  for (const o of parseObjectsText(readFileSync(file, 'utf8'), file) as Obj[]) {
    const copy = structuredClone(o);
    copy.metadata = { ...copy.metadata, resourceVersion: String(generation) };
    next.set(keyOf(copy), copy);
  }
  const events: { type: string; object: Obj }[] = [];
  for (const [k, o] of next) {
    const prev = byKey.get(k);
    if (!prev) events.push({ type: 'ADDED', object: o });
    else if (JSON.stringify({ ...prev, metadata: {} }) !== JSON.stringify({ ...o, metadata: {} }))
      events.push({ type: 'MODIFIED', object: o });
  }
  for (const [k, o] of byKey) if (!next.has(k)) events.push({ type: 'DELETED', object: o });
  byKey = next;
  for (const w of watchers)
    for (const e of events) if (e.object.kind === w.kind) w.res.write(`${JSON.stringify(e)}\n`);
}

load();
process.on('SIGHUP', () => {
  try {
    load();
    process.stdout.write(`reloaded ${generation}\n`);
  } catch (err) {
    process.stdout.write(`reload failed: ${(err as Error).message}\n`);
  }
});

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const kind = PATHS[url.pathname];
  if (!kind) {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', status: 'Failure', code: 404 }));
    return;
  }
  const watch = url.searchParams.get('watch');
  if (watch === '1' || watch === 'true') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
    const w = { kind, res };
    watchers.add(w);
    req.on('close', () => watchers.delete(w));
    return;
  }
  const items = [...byKey.values()].filter((o) => o.kind === kind);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kind: `${kind}List`, metadata: { resourceVersion: String(generation) }, items }));
});
server.listen(Number(values.port), values.listen, () => process.stdout.write('ready\n'));
