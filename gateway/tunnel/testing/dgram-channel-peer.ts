// Test-only (test/natlab/udp-path-dgram.netns.test.ts): one end of a UDP path as the gateway
// builds it (gateway/tunnel/udp.ts) with nothing else of the gateway: ICE via STUN, the
// reliable channel under the gateways' TLS 1.3 (lib/tunnel/tls.ts, node certificates), and the
// datagram channel (dgram-channel.ts) bound to that TLS session. Signalling as JSON lines on
// stdin/stdout (the test relays them, standing in for the tunnel-server).
//
//   node dgram-channel-peer.ts stun HOST PORT            a STUN responder (the tunnel-server's)
//   node dgram-channel-peer.ts offer|answer IDENTITY.json STUN_HOST:PORT COUNT
//
// Prints `SIGNAL {json}` lines, `OPEN` once both channels are up and bound, then (answerer) one
// `RESULT {json}` line: the numbers that arrived on each channel, in arrival order (and
// PROGRESS, STATE and ICE lines for a failing test's log). The
// offerer starts sending on a `GO` line: COUNT numbered lines on the reliable channel, then
// the same numbers as datagrams on the datagram channel (stream 1), 2 ms apart, then END.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import nodeDataChannel from 'node-datachannel';
import { silentLogger } from '../../../lib/log.ts';
import { acceptTls, connectTls } from '../../../lib/tunnel/tls.ts';
import { startStun } from '../../../tunnel-server/stun-socket.ts';
import { DatagramChannel, DGRAM_CHANNEL_INIT, DGRAM_CHANNEL_LABEL } from '../dgram-channel.ts';
import { ChannelStream } from '../udp.ts';

const [mode, a1, a2, a3] = process.argv.slice(2);
if (mode === 'stun') {
  await startStun(a1, Number(a2), silentLogger);
  process.stdout.write('READY\n');
} else if (mode === 'offer' || mode === 'answer') {
  await peer(mode === 'offer', JSON.parse(readFileSync(a1, 'utf8')), a2, Number(a3));
} else {
  throw new Error('usage: dgram-channel-peer.ts stun HOST PORT | offer|answer IDENTITY.json STUN COUNT');
}

type DC = ReturnType<InstanceType<typeof nodeDataChannel.PeerConnection>['createDataChannel']>;

async function peer(
  offerer: boolean,
  id: { name: string; expect: string; keyPem: string; certPem: string; caPem: string },
  stun: string,
  count: number,
): Promise<void> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const pc = new nodeDataChannel.PeerConnection(id.name, {
    iceServers: [`stun:${stun}`],
    maxMessageSize: 256 * 1024,
  });
  pc.onLocalDescription((sdp, type) => out(`SIGNAL ${JSON.stringify({ sdp, type, dgramChannel: 1 })}`));
  pc.onLocalCandidate((candidate, mid) => out(`SIGNAL ${JSON.stringify({ candidate, mid })}`));
  pc.onStateChange((state) => out(`STATE ${state}`));
  pc.onIceStateChange((state) => out(`ICE ${state}`));
  let dg: DC | undefined;
  let tls: TLSSocket | undefined;
  let channel: DatagramChannel | undefined;
  const got = { dgram: [] as number[], reliable: [] as number[] };
  const role = offerer ? 'client' : 'server';
  // Progress for a failing test's log: what arrived so far, once a second while anything did.
  let shown = '';
  setInterval(() => {
    const now = `PROGRESS dgram ${got.dgram.length} reliable ${got.reliable.length} dropped ${JSON.stringify(channel?.counters.dropped ?? {})}`;
    if (now !== shown) out(now);
    shown = now;
  }, 1000).unref();

  const bind = () => {
    if (!dg || !tls || channel || !dg.isOpen()) return;
    const socket = tls;
    channel = new DatagramChannel(dg, (n, label, ctx) => socket.exportKeyingMaterial(n, label, ctx), role);
    channel.onDatagram = (_stream, p) => got.dgram.push(p.readUInt32BE(0));
    out('OPEN');
  };
  const onDgram = (dc: DC) => {
    dg = dc;
    if (dc.isOpen()) bind();
    else dc.onOpen(bind);
  };
  const onReliable = (dc: DC) => {
    const start = async () => {
      const identity = { keyPem: id.keyPem, certPem: id.certPem, caPem: id.caPem };
      const expect = { kind: 'node' as const, name: id.expect };
      const socket = new ChannelStream(dc);
      const r = offerer
        ? await connectTls({ identity, expect, socket })
        : await acceptTls({ identity, expect, socket });
      tls = r.socket;
      let text = '';
      tls.on('data', (d: Buffer) => {
        text += d.toString();
        const lines = text.split('\n');
        text = lines.pop() ?? '';
        for (const line of lines) {
          if (line === 'END') {
            out(`RESULT ${JSON.stringify({ ...got, dropped: channel?.counters.dropped ?? {} })}`);
            setTimeout(() => process.exit(0), 200);
          } else got.reliable.push(Number(line));
        }
      });
      bind();
    };
    if (dc.isOpen()) void start();
    else dc.onOpen(() => void start());
  };
  if (offerer) onReliable(pc.createDataChannel('edgemesh'));
  else pc.onDataChannel((dc) => (dc.getLabel() === DGRAM_CHANNEL_LABEL ? onDgram(dc) : onReliable(dc)));

  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'GO') {
      out('GOING');
      send(count).then(
        () => out('SENT'),
        (err: Error) => out(`SEND FAILED ${err.message}`),
      );
      continue;
    }
    const data = JSON.parse(line) as Record<string, unknown>;
    if (typeof data.sdp === 'string') {
      pc.setRemoteDescription(data.sdp, data.type as 'offer' | 'answer');
      if (offerer && data.dgramChannel === 1)
        onDgram(pc.createDataChannel(DGRAM_CHANNEL_LABEL, DGRAM_CHANNEL_INIT));
    } else if (typeof data.candidate === 'string') pc.addRemoteCandidate(data.candidate, String(data.mid));
  }

  async function send(n: number): Promise<void> {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    for (let i = 0; i < n; i++) {
      tls?.write(`${i}\n`);
      await sleep(2);
    }
    for (let i = 0; i < n; i++) {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(i);
      channel?.send(1, b);
      await sleep(2);
    }
    tls?.write('END\n');
  }
}
