// Stand-in for nginx-like images on the test node: answers every request on each port with
// a small page naming the pod and node that served it (tests read that to see where a
// request went) and the client address it saw.
//   node http-server.ts --ports=80,8080 --pod=NAMESPACE/NAME --node=NODE
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { ports: { type: 'string' }, pod: { type: 'string' }, node: { type: 'string' } },
  strict: true,
});
const ports = (values.ports ?? '80').split(',').map(Number);
if (ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
  console.error(`http-server: --ports must be a comma-separated list of ports, got ${values.ports}`);
  process.exit(2);
}
const pod = values.pod ?? 'unknown';
const node = values.node ?? 'unknown';

for (const port of ports) {
  createServer((req, res) => {
    const client = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const body = `<!doctype html><title>${pod}</title><p>served by pod ${pod} on node ${node} port ${port} to ${client}</p>\n`;
    res.writeHead(200, { 'content-type': 'text/html', 'x-served-by': pod });
    res.end(req.method === 'HEAD' ? undefined : body);
  })
    .on('error', (err) => {
      console.error(`http-server: port ${port}: ${err.message}`);
      process.exit(1);
    })
    .listen(port, () => console.error(`http-server: ${pod} listening on ${port}`));
}
process.on('SIGTERM', () => process.exit(0));
