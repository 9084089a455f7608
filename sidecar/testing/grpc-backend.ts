/**
 * gRPC backend for the lab (sidecar/grpc.netns.test.ts, bench/proxy-h2.ts), run inside the
 * backends' network namespace: a @grpc/grpc-js server of grpc-service.ts's `Lab` service on
 * each --addr at --port. Prints "ready" once every address is bound.
 */
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { labService, MAX_MESSAGE } from './grpc-service.ts';

const { values } = parseArgs({ options: { addr: { type: 'string' }, port: { type: 'string' } } });
const addrs = (values.addr ?? '').split(',').filter(Boolean);
const port = Number(values.port);
if (addrs.length === 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('grpc-backend: --addr IP[,IP…] and --port 1-65535 are required');
  process.exit(2);
}

function serve(ip: string): Promise<void> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
  });
  server.addService(labService, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) =>
      done(null, Buffer.concat([Buffer.from(`${ip}\n`), call.request])),
    Fail: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      const metadata = new grpc.Metadata();
      metadata.set('x-why', 'lab');
      done({ code: grpc.status.NOT_FOUND, details: `no such thing: ${call.request}`, metadata });
    },
    Sleep: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      const ms = Math.min(Number(String(call.request)) || 0, 30_000);
      const timer = setTimeout(() => done(null, Buffer.from('slept')), ms);
      call.on('cancelled', () => clearTimeout(timer));
    },
    Count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Math.min(Number(String(call.request)) || 0, 10_000);
      for (let i = 0; i < n; i++) call.write(Buffer.from(`${ip} ${i}`));
      const trailer = new grpc.Metadata();
      trailer.set('x-count', String(n));
      call.end(trailer);
    },
    Chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      let seen = 0;
      call.on('data', (m: Buffer) => {
        seen++;
        call.write(Buffer.from(`${ip}: ${m}`));
      });
      call.on('end', () => {
        const trailer = new grpc.Metadata();
        trailer.set('x-seen', String(seen));
        call.end(trailer);
      });
    },
  });
  return new Promise((resolve, reject) =>
    server.bindAsync(`${ip}:${port}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(new Error(`grpc-backend: bind ${ip}:${port}: ${err.message}`)) : resolve(),
    ),
  );
}

await Promise.all(addrs.map(serve));
process.stdout.write('ready\n');
