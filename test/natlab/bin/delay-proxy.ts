// A TCP forwarder that delays every chunk by --delay-ms each way, keeping order: a slow path to
// a tunnel-server replica for the NAT lab, where the kernel has no netem qdisc. SIGUSR2 switches
// the delay to --then-delay-ms (a path that degrades while in use). Prints READY.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    listen: { type: 'string' },
    to: { type: 'string' },
    'delay-ms': { type: 'string', default: '40' },
    'then-delay-ms': { type: 'string' },
  },
});
const [listenHost, listenPort] = String(a.listen).split(':');
const [toHost, toPort] = String(a.to).split(':');
const ms = (flag: 'delay-ms' | 'then-delay-ms'): number => {
  const v = Number(a[flag]);
  if (!(v >= 0 && v <= 10_000)) throw new Error(`--${flag}: ${a[flag]} is not 0..10000`);
  return v;
};
let delay = ms('delay-ms');
if (a['then-delay-ms'] !== undefined) {
  const then = ms('then-delay-ms');
  process.on('SIGUSR2', () => {
    delay = then;
    process.stderr.write(`DELAY ${then}\n`);
  });
}

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
