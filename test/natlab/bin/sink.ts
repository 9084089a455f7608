// A pod's server for the NAT lab: port 9000 hashes everything it receives and, at the
// client's FIN, answers "<sha256 hex> <bytes>\n"; port 9001 echoes.
import { createHash } from 'node:crypto';
import net from 'node:net';

net
  .createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (c) => {
      h.update(c);
      n += c.length;
    });
    s.on('end', () => s.end(`${h.digest('hex')} ${n}\n`));
    s.on('error', () => undefined);
  })
  .listen(9000, '0.0.0.0');
net
  .createServer((s) => {
    s.setNoDelay(true);
    s.pipe(s);
    s.on('error', () => undefined);
  })
  .listen(9001, '0.0.0.0');
process.stdout.write('READY\n');
