/**
 * A raw DNS client for the namespace tests: sends exactly the bytes it is given (malformed
 * packets dig cannot produce) and the fuzz stream, over UDP or TCP, and prints what came
 * back as JSON on stdout. Run inside a namespace: `node sidecar/dns/testing/rawclient.ts '<json>'`.
 * Every wait is bounded.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { fuzzPackets } from './fuzz.ts';
import { encodeQuery } from './testutil.ts';

type Command =
  | { mode: 'udp-exchange'; host: string; port: number; timeoutMs: number; packets: string[] }
  | {
      mode: 'tcp-exchange';
      host: string;
      port: number;
      timeoutMs: number;
      chunks: string[];
      expect: number;
      /** Pause between chunks (a slow client). */
      delayMs?: number;
    }
  | { mode: 'udp-fuzz'; host: string; port: number; seed: number; count: number; batch: number }
  | { mode: 'tcp-fuzz'; host: string; port: number; seed: number; connections: number }
  | { mode: 'spoofing-upstream'; host: string; port: number; spoofPort: number; seconds: number };

const PROBE_NAME = 'web.default.svc.cluster.local';

async function udpExchange(c: Extract<Command, { mode: 'udp-exchange' }>) {
  const sock = dgram.createSocket(net.isIPv6(c.host) ? 'udp6' : 'udp4');
  const results: (string | null)[] = [];
  for (const hex of c.packets) {
    const answer = await new Promise<Buffer | null>((resolve) => {
      const timer = setTimeout(() => done(null), c.timeoutMs);
      const onMsg = (m: Buffer) => done(m);
      const done = (m: Buffer | null) => {
        clearTimeout(timer);
        sock.off('message', onMsg);
        resolve(m);
      };
      sock.on('message', onMsg);
      sock.send(Buffer.from(hex, 'hex'), c.port, c.host);
    });
    results.push(answer ? answer.toString('hex') : null);
  }
  sock.close();
  return results;
}

/** Writes each chunk as given (framing included) and collects framed answers until `expect` or close. */
function tcpExchange(c: Extract<Command, { mode: 'tcp-exchange' }>) {
  return new Promise<{ answers: string[]; closedByServer: boolean }>((resolve) => {
    const sock = net.connect({ host: c.host, port: c.port });
    const answers: string[] = [];
    let buf = Buffer.alloc(0);
    let closedByServer = false;
    const finish = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ answers, closedByServer });
    };
    const timer = setTimeout(finish, c.timeoutMs);
    sock.on('connect', async () => {
      for (const chunk of c.chunks) {
        if (sock.destroyed) return;
        sock.write(Buffer.from(chunk, 'hex'));
        if (c.delayMs) await new Promise((r) => setTimeout(r, c.delayMs));
      }
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        answers.push(buf.subarray(2, 2 + buf.readUInt16BE(0)).toString('hex'));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (answers.length >= c.expect && c.expect > 0) finish();
    });
    sock.on('end', () => {
      closedByServer = true;
      finish();
    });
    sock.on('error', () => {
      closedByServer = true;
      finish();
    });
  });
}

/** Sends the fuzz stream in batches; after each batch a valid probe must be answered. */
async function udpFuzz(c: Extract<Command, { mode: 'udp-fuzz' }>) {
  const sock = dgram.createSocket(net.isIPv6(c.host) ? 'udp6' : 'udp4');
  let received = 0;
  let probeId = 0;
  let waiting: ((ok: boolean) => void) | undefined;
  sock.on('message', (m: Buffer) => {
    received++;
    if (waiting && m.length >= 12 && m.readUInt16BE(0) === probeId && (m[3] & 0xf) === 0) waiting(true);
  });
  let sent = 0;
  let probes = 0;
  let probeFailures = 0;
  // A probe may be lost when a burst overflows the socket buffer: three tries of 2 s each.
  const probe = async () => {
    for (let attempt = 0; attempt < 3; attempt++) if (await probeOnce()) return true;
    return false;
  };
  const probeOnce = () =>
    new Promise<boolean>((resolve) => {
      probeId = (probeId + 1) & 0xffff;
      const timer = setTimeout(() => done(false), 2000);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        waiting = undefined;
        resolve(ok);
      };
      waiting = done;
      sock.send(encodeQuery({ name: PROBE_NAME, type: 'A', id: probeId }), c.port, c.host);
    });
  let batch: Buffer[] = [];
  const flush = async () => {
    await Promise.all(batch.map((b) => new Promise((r) => sock.send(b, c.port, c.host, r))));
    sent += batch.length;
    batch = [];
    probes++;
    if (!(await probe())) probeFailures++;
  };
  for (const p of fuzzPackets(c.seed, c.count)) {
    batch.push(p);
    if (batch.length >= c.batch) await flush();
  }
  if (batch.length > 0) await flush();
  sock.close();
  return { sent, received, probes, probeFailures };
}

/** Garbage TCP streams (random framing and bytes); afterwards a fresh connection must still be answered. */
async function tcpFuzz(c: Extract<Command, { mode: 'tcp-fuzz' }>) {
  const packets = [...fuzzPackets(c.seed, c.connections * 4)];
  let closedByServer = 0;
  for (let i = 0; i < c.connections; i++) {
    const chunks = packets.slice(i * 4, i * 4 + 4).map((p, j) => {
      // Half the streams are well framed (each message answered or dropped), half are not.
      const framed = Buffer.alloc(2 + p.length);
      framed.writeUInt16BE(j % 2 === 0 ? p.length : (p.length * 7919 + i) & 0xffff, 0);
      p.copy(framed, 2);
      return framed.toString('hex');
    });
    const r = await tcpExchange({
      mode: 'tcp-exchange',
      host: c.host,
      port: c.port,
      timeoutMs: 100,
      chunks,
      expect: 0,
    });
    if (r.closedByServer) closedByServer++;
  }
  const q = encodeQuery({ name: PROBE_NAME, type: 'A', id: 7 });
  const framed = Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]);
  const after = await tcpExchange({
    mode: 'tcp-exchange',
    host: c.host,
    port: c.port,
    timeoutMs: 2000,
    chunks: [framed.toString('hex')],
    expect: 1,
  });
  return { connections: c.connections, closedByServer, probeAnswered: after.answers.length === 1 };
}

/**
 * An upstream under attack, for a bounded time: every query first gets forged answers
 * (198.51.100.66) — from another port, with a wrong ID, for another question — and only
 * 100 ms later the real one (198.51.100.99) from the right address and port. A resolver that
 * validates replies returns the real answer.
 */
async function spoofingUpstream(c: Extract<Command, { mode: 'spoofing-upstream' }>) {
  const real = dgram.createSocket('udp4');
  const other = dgram.createSocket('udp4');
  await new Promise<void>((r) => real.bind(c.port, c.host, r));
  await new Promise<void>((r) => other.bind(c.spoofPort, c.host, r));
  let queries = 0;
  const answer = (query: Buffer, ip: string, opts: { id?: number; name?: string } = {}) => {
    const q = dnsPacket.decode(query);
    const question = q.questions?.[0];
    return dnsPacket.encode({
      type: 'response',
      id: opts.id ?? q.id,
      flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER,
      questions: [{ ...question!, name: opts.name ?? question!.name }],
      answers: [{ name: opts.name ?? question!.name, type: 'A', ttl: 60, data: ip }],
    });
  };
  real.on('message', (query, from) => {
    queries++;
    try {
      const id = query.readUInt16BE(0);
      other.send(answer(query, '198.51.100.66'), from.port, from.address);
      real.send(answer(query, '198.51.100.66', { id: id ^ 0x5a5a }), from.port, from.address);
      real.send(answer(query, '198.51.100.66', { name: 'other.example.test' }), from.port, from.address);
      setTimeout(() => real.send(answer(query, '198.51.100.99'), from.port, from.address), 100);
    } catch {
      // not a query we can parse: ignore
    }
  });
  await new Promise((r) => setTimeout(r, c.seconds * 1000));
  real.close();
  other.close();
  return { queries };
}

async function main() {
  const c = JSON.parse(process.argv[2] ?? '{}') as Command;
  let out: unknown;
  if (c.mode === 'udp-exchange') out = await udpExchange(c);
  else if (c.mode === 'tcp-exchange') out = await tcpExchange(c);
  else if (c.mode === 'udp-fuzz') out = await udpFuzz(c);
  else if (c.mode === 'tcp-fuzz') out = await tcpFuzz(c);
  else if (c.mode === 'spoofing-upstream') out = await spoofingUpstream(c);
  else throw new Error(`unknown mode in ${process.argv[2]}`);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`rawclient: ${String(err)}\n`);
  process.exit(1);
});
