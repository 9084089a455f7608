// Attempts a gateway must never get away with, run from inside a lab node. Prints one JSON
// object: attempt → "ok" or "refused: <reason>".
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadOrEnrol } from '../../../gateway/tunnel/enrol.ts';
import { describeError } from '../../../lib/errors.ts';
import { silentLogger } from '../../../lib/log.ts';
import { createCA, issueIdentity, type TlsIdentity } from '../../../lib/tunnel/identity.ts';
import { connectTls } from '../../../lib/tunnel/tls.ts';

const { values: a } = parseArgs({
  options: {
    ca: { type: 'string' },
    server: { type: 'string' },
    peer: { type: 'string' },
    token: { type: 'string' },
  },
});
const caPem = readFileSync(String(a.ca), 'utf8');
const [serverHost, serverPort] = String(a.server).split(':');
const [peerHost, peerPort] = String(a.peer).split(':');
// Same node name as a real node, signed by a CA of the attacker's own.
const forged: TlsIdentity = {
  ...issueIdentity(createCA('edgemesh mesh CA'), { kind: 'node', name: 'node1-2' }),
  caPem,
};

/** Connects; "ok" only if the other side keeps the authenticated connection open for 1 s. */
async function attempt(
  identity: TlsIdentity,
  host: string,
  port: string,
  expect: 'node' | 'tunnel-server',
): Promise<string> {
  try {
    const { socket } = await connectTls({
      identity,
      expect: { kind: expect },
      host,
      port: Number(port),
      timeoutMs: 3000,
    });
    const closed = await new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      socket.once('error', () => resolve(true));
      socket.resume();
      setTimeout(() => resolve(false), 1000);
    });
    socket.destroy();
    return closed ? 'refused: closed after the handshake' : 'ok';
  } catch (err) {
    return `refused: ${describeError(err)}`;
  }
}

const results: Record<string, string> = {};
results.serverWithForgedCert = await attempt(forged, serverHost, serverPort, 'tunnel-server');
results.peerWithForgedCert = await attempt(forged, peerHost, peerPort, 'node');
const servers = [{ host: serverHost, port: Number(serverPort) }];
results.enrolWithWrongToken = await loadOrEnrol({
  nodeName: 'node1-2',
  stateDir: mkdtempSync(join(tmpdir(), 'forged-')),
  caPem,
  servers,
  token: async () => 'not-the-token',
  log: silentLogger,
}).then(
  () => 'ok',
  (err) => `refused: ${describeError(err)}`,
);
// A genuine node identity (enrolled with the real token) ...
const genuine = await loadOrEnrol({
  nodeName: 'node1-2',
  stateDir: mkdtempSync(join(tmpdir(), 'genuine-')),
  caPem,
  servers,
  token: async () => String(a.token),
  log: silentLogger,
});
// ... is still not a tunnel-server: a gateway that expects one refuses a node.
results.peerAsServerWithNodeCert = await attempt(genuine, peerHost, peerPort, 'tunnel-server');
results.control = await attempt(genuine, serverHost, serverPort, 'tunnel-server');
process.stdout.write(`${JSON.stringify(results)}\n`);
process.exit(0);
