// Child process for bench/webhook.ts: either the real edgemesh webhook server or a baseline
// fastify server with the same TLS setup that answers every POST with an empty allow.
import Fastify from 'fastify';
import { createLogger } from '../lib/log.ts';
import { createRegistry } from '../lib/metrics.ts';
import { resolveConfig } from '../webhook/config.ts';
import { startWebhookServer } from '../webhook/server.ts';

const [mode, certFile, keyFile] = process.argv.slice(2);
if (mode === 'edgemesh') {
  const server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    tlsCertFile: certFile,
    tlsKeyFile: keyFile,
    config: resolveConfig({}),
    log: createLogger('webhook'),
    registry: createRegistry('webhook'),
  });
  process.stdout.write(`${server.address.port}\n`);
} else {
  const { readFileSync } = await import('node:fs');
  const app = Fastify({
    https: { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2' },
    logger: false,
  });
  app.post('/mutate', async (req) => {
    const uid = (req.body as { request?: { uid?: string } })?.request?.uid ?? '';
    return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true } };
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  process.stdout.write(`${typeof addr === 'object' && addr ? addr.port : 0}\n`);
}
