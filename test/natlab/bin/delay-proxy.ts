// A TCP forwarder that delays every chunk by --delay-ms each way, keeping order: a slow path to
// a tunnel-server replica for the NAT lab, where the kernel has no netem qdisc. Prints READY.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    listen: { type: 'string' },
    to: { type: 'string' },
    'delay-ms': { type: 'string', default: '40' },
  },
});
const [listenHost, listenPort] = String(a.listen).split(':');
const [toHost, toPort] = String(a.to).split(':');
const delay = Number(a['delay-ms']);
if (!(delay >= 0 && delay <= 10_000)) throw new Error(`--delay-ms: ${a['delay-ms']} is not 0..10000`);

/** Copies from → to, each chunk `delay` ms after it arrived, in order; ends after the last. */
function delayed(from: net.Socket, to: net.Socket): void {
  let last = 0;
  from.on('data', (chunk) => {
    const at = Math.max(Date.now() + delay, last);
    last = at;
    setTimeout(() => to.write(chunk), at - Date.now());
  });
  from.on('end', () => setTimeout(() => to.end(), Math.max(0, last - Date.now())));
}

net
  .createServer((client) => {
    const upstream = net.connect({ host: toHost, port: Number(toPort) });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    delayed(client, upstream);
    delayed(upstream, client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  })
  .listen(Number(listenPort), listenHost, () => process.stdout.write('READY\n'));
