/**
 * Sequential DNS queries over UDP, one at a time, each timed (bench/on-demand.ts runs it in
 * the pod's namespace). Prints one JSON line: {"ms":[...], "rcodes":{...}}.
 *
 *   node bench/lib/dns-probe.ts --port 15053 --names a,b,c [--timeout-ms 2000]
 */
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import dnsPacket from 'dns-packet';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '15053' },
    names: { type: 'string', default: '' },
    'names-file': { type: 'string' },
    'timeout-ms': { type: 'string', default: '2000' },
  },
});
const names = values['names-file']
  ? (await import('node:fs')).readFileSync(values['names-file'], 'utf8').split('\n').filter(Boolean)
  : values.names.split(',').filter(Boolean);
const port = Number(values.port);
const timeoutMs = Number(values['timeout-ms']);
const socket = dgram.createSocket('udp4');
await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));

const ms: number[] = [];
const rcodes: Record<string, number> = {};
let id = 1;
for (const name of names.slice(0, 100_000)) {
  const query = dnsPacket.encode({ type: 'query', id: id++ & 0xffff, questions: [{ type: 'A', name }] });
  const started = process.hrtime.bigint();
  const rcode = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => {
      socket.off('message', onMessage);
      resolve('TIMEOUT');
    }, timeoutMs);
    function onMessage(msg: Buffer): void {
      if (msg.readUInt16BE(0) !== query.readUInt16BE(0)) return;
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve(['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN'][msg[3] & 0xf] ?? String(msg[3] & 0xf));
    }
    socket.on('message', onMessage);
    socket.send(query, port, '127.0.0.1');
  });
  ms.push(Number(process.hrtime.bigint() - started) / 1e6);
  rcodes[rcode] = (rcodes[rcode] ?? 0) + 1;
}
socket.close();
process.stdout.write(`${JSON.stringify({ ms, rcodes })}\n`);
