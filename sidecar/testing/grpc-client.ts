/**
 * gRPC test client (@grpc/grpc-js) run inside the pod namespace, so its connection is captured.
 * ONE channel per run (one HTTP/2 connection); prints one JSON line with what came back.
 *
 *   unary  --count N     N Echo calls one after another: {backends: [ip…]}
 *   big    --bytes N     one Echo of N random bytes: {backend, bytes, same}
 *   count  --count N     server stream: {messages, status, trailers}
 *   chat   --count N     bidi stream, N messages: {messages, status, trailers}
 *   fail                 Fail("thing"): {code, details, trailers}
 *   sleep  --ms M --deadline-ms D   Sleep(M) with a deadline of D ms: {code, details}
 *
 * Every call has a deadline (10 s unless told) so a broken proxy fails the test, never hangs it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { labService, MAX_MESSAGE } from './grpc-service.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    count: { type: 'string', default: '1' },
    bytes: { type: 'string', default: '0' },
    ms: { type: 'string', default: '0' },
    'deadline-ms': { type: 'string', default: '10000' },
  },
});
const count = Math.min(Number(values.count), 10_000);
const Client = grpc.makeGenericClientConstructor(labService, 'Lab');
const client = new Client(`${values.host}:${values.port}`, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
}) as unknown as Record<string, (...args: unknown[]) => grpc.ClientReadableStream<Buffer>>;
const deadline = () => ({ deadline: Date.now() + Number(values['deadline-ms']) });
const trailersOf = (m: grpc.Metadata | undefined) =>
  Object.fromEntries(
    Object.entries(m?.getMap() ?? {})
      .filter(([k]) => k.startsWith('x-'))
      .map(([k, v]) => [k, String(v)]),
  );

function unary(name: string, request: Buffer, opts = deadline()): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client[name](request, new grpc.Metadata(), opts, (err: grpc.ServiceError | null, reply: Buffer) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

/** Reads a response stream to its status: the messages, the status code and the x- trailers. */
function drain(call: grpc.ClientReadableStream<Buffer>): Promise<object> {
  return new Promise((resolve) => {
    const messages: string[] = [];
    let trailers: Record<string, string> = {};
    call.on('data', (m: Buffer) => messages.push(String(m)));
    call.on('metadata', () => undefined);
    call.on('error', () => undefined); // the status below says it
    call.on('status', (s: grpc.StatusObject) => {
      trailers = trailersOf(s.metadata);
      resolve({ messages, status: s.code, details: s.details, trailers });
    });
  });
}

async function main(): Promise<object> {
  switch (positionals[0]) {
    case 'unary': {
      const backends: string[] = [];
      for (let i = 0; i < count; i++) backends.push(String(await unary('Echo', Buffer.alloc(0))).trim());
      return { backends };
    }
    case 'big': {
      const payload = randomBytes(Number(values.bytes));
      const reply = await unary('Echo', payload);
      const nl = reply.indexOf(10);
      const body = reply.subarray(nl + 1);
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      return { backend: String(reply.subarray(0, nl)), bytes: body.length, same: sha(body) === sha(payload) };
    }
    case 'count':
      return drain(client.Count(Buffer.from(String(count)), new grpc.Metadata(), deadline()));
    case 'chat': {
      const call = (
        client.Chat as unknown as (m: grpc.Metadata, o: object) => grpc.ClientDuplexStream<Buffer, Buffer>
      )(new grpc.Metadata(), deadline());
      const result = drain(call as unknown as grpc.ClientReadableStream<Buffer>);
      // One message at a time, each after the previous answer: a real conversation, not a batch.
      let sent = 0;
      const next = () => {
        if (sent === count) call.end();
        else call.write(Buffer.from(`m${sent++}`));
      };
      call.on('data', next);
      next();
      return result;
    }
    case 'fail':
    case 'sleep': {
      const [name, request] = positionals[0] === 'fail' ? ['Fail', 'thing'] : ['Sleep', values.ms];
      try {
        await unary(name, Buffer.from(request));
        return { code: 0 };
      } catch (e) {
        const err = e as grpc.ServiceError;
        return { code: err.code, details: err.details, trailers: trailersOf(err.metadata) };
      }
    }
    default:
      throw new Error(`grpc-client: unknown command ${positionals[0]} (unary|big|count|chat|fail|sleep)`);
  }
}

try {
  process.stdout.write(`${JSON.stringify(await main())}\n`);
} catch (err) {
  const e = err as grpc.ServiceError;
  process.stdout.write(`${JSON.stringify({ error: e.message, code: e.code })}\n`);
} finally {
  client.close();
}
