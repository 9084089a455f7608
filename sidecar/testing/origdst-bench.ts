/**
 * Measures getsockopt(SO_ORIGINAL_DST) per call on a really redirected connection: run as
 * root in a pod namespace with the capture rules and nothing on port 15001; this process
 * listens there and its own connect to `--to:--port` is redirected to itself. One JSON line.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { originalDst } from '../proxy/original-dst.ts';

const { values } = parseArgs({
  options: { to: { type: 'string' }, port: { type: 'string' }, calls: { type: 'string' } },
});
const calls = Math.min(Number(values.calls ?? 100_000), 1_000_000);
const server = net.createServer((socket) => {
  const first = originalDst(socket);
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) originalDst(socket);
  const usPerCall = ((performance.now() - t0) * 1000) / calls;
  process.stdout.write(`${JSON.stringify({ dst: first, calls, usPerCall })}\n`);
  socket.destroy();
  server.close();
  client.destroy();
});
let client: net.Socket;
server.listen(15001, '0.0.0.0', () => {
  client = net.connect({ host: values.to ?? '10.96.0.20', port: Number(values.port ?? 80) });
  client.on('error', () => undefined);
});
setTimeout(() => process.exit(3), 20_000).unref();
