// Test-only (test/natlab/udp-path-loss.netns.test.ts): one end of a UDP path's peer
// connection as gateway/tunnel/udp.ts builds it (ICE via STUN, the reliable `edgemesh` data
// channel, the same RtcConfig), carrying a steady numbered stream, with every state change of
// every layer printed with a timestamp, so a failing run shows which layer gave up first.
// Signalling as JSON lines on stdin/stdout (the test relays them, standing in for the
// tunnel-server).
//
//   node loss-peer.ts stun HOST PORT                 a STUN responder (the tunnel-server's)
//   node loss-peer.ts offer|answer NAME STUN_HOST:PORT COUNT [jitter]
//
// Prints `SIGNAL {json}` lines, `OPEN` when the channel is open, `T+ms STATE|ICE|GATHER|LOG …`
// lines, and (answerer) `PROGRESS n` once a second while numbers arrive, then `RESULT {json}`
// (how many arrived, whether in order, the peer connection's last state). The offerer starts on
// a `GO` line: COUNT numbered 1 KiB messages, 10 ms apart (or 5-15 ms at random with `jitter`) (a steady flow, not a bulk transfer:
// the loss pattern, not the congestion window, is under test), then END.
import { createInterface } from 'node:readline';
import nodeDataChannel from 'node-datachannel';
import { silentLogger } from '../../../lib/log.ts';
import { startStun } from '../../../tunnel-server/stun-socket.ts';
import { pathLossReason, udpPathConfig } from '../udp.ts';

const [mode, a1, a2, a3, a4] = process.argv.slice(2);
const t0 = Date.now();
const out = (line: string) => process.stdout.write(`${line}\n`);
const at = (what: string) => out(`T+${Date.now() - t0} ${what}`);

if (mode === 'stun') {
  await startStun(a1, Number(a2), silentLogger);
  out('READY');
} else if (mode === 'offer' || mode === 'answer') {
  const count = Number(a3);
  if (!a1 || !a2 || !Number.isInteger(count) || count < 1)
    throw new Error(`loss-peer: bad arguments ${a1} ${a2} ${a3}`);
  if (a4 !== undefined && a4 !== 'jitter') throw new Error(`loss-peer: unknown option ${a4}`);
  await peer(mode === 'offer', a1, a2, count, a4 === 'jitter');
} else {
  throw new Error('usage: loss-peer.ts stun HOST PORT | offer|answer NAME STUN COUNT');
}

type DC = ReturnType<InstanceType<typeof nodeDataChannel.PeerConnection>['createDataChannel']>;

async function peer(
  offerer: boolean,
  name: string,
  stun: string,
  count: number,
  jitter: boolean,
): Promise<void> {
  // libdatachannel's own account (SCTP association changes, DTLS alerts, ICE) at Info.
  nodeDataChannel.initLogger('Info', (level, message) => at(`LOG ${level} ${message}`));
  const [host, port] = stun.split(':');
  const pc = new nodeDataChannel.PeerConnection(name, udpPathConfig({ host, port: Number(port) }));
  pc.onLocalDescription((sdp, type) => out(`SIGNAL ${JSON.stringify({ sdp, type })}`));
  pc.onLocalCandidate((candidate, mid) => out(`SIGNAL ${JSON.stringify({ candidate, mid })}`));
  let last = 'new';
  pc.onStateChange((state) => {
    last = state;
    at(`STATE ${state}`);
    // What udp.ts would give the session as its close reason.
    if (state === 'disconnected' || state === 'failed') at(`LOST ${pathLossReason(state)}`);
  });
  pc.onIceStateChange((state) => at(`ICE ${state}`));
  pc.onGatheringStateChange((state) => at(`GATHER ${state}`));

  const got: number[] = [];
  let ordered = true;
  let shown = -1;
  setInterval(() => {
    if (got.length !== shown) at(`PROGRESS ${got.length}`);
    shown = got.length;
  }, 1000).unref();
  const result = () => {
    out(`RESULT ${JSON.stringify({ received: got.length, ordered, state: last })}`);
    setTimeout(() => process.exit(0), 200);
  };

  let channel: DC | undefined;
  const onChannel = (dc: DC) => {
    channel = dc;
    const open = () => out('OPEN');
    if (dc.isOpen()) open();
    else dc.onOpen(open);
    dc.onClosed(() => {
      at('CHANNEL closed');
      if (!offerer) result();
    });
    dc.onError((e) => at(`CHANNEL error ${e}`));
    dc.onMessage((msg) => {
      if (typeof msg === 'string') {
        if (msg === 'END') result();
        return;
      }
      const n = (Buffer.isBuffer(msg) ? msg : Buffer.from(msg)).readUInt32BE(0);
      if (n !== got.length) ordered = false;
      got.push(n);
    });
  };
  if (offerer) onChannel(pc.createDataChannel('edgemesh'));
  else pc.onDataChannel(onChannel);

  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'GO') {
      at('GOING');
      void send();
      continue;
    }
    const data = JSON.parse(line) as Record<string, unknown>;
    if (typeof data.sdp === 'string') pc.setRemoteDescription(data.sdp, data.type as 'offer' | 'answer');
    else if (typeof data.candidate === 'string') pc.addRemoteCandidate(data.candidate, String(data.mid));
  }

  async function send(): Promise<void> {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const msg = Buffer.alloc(1024);
    for (let i = 0; i < count; i++) {
      if (!channel?.isOpen()) {
        at(`SEND stopped at ${i}: channel closed`);
        return;
      }
      msg.writeUInt32BE(i, 0);
      channel.sendMessageBinary(msg);
      // jitter: 5-15 ms at random instead of 10, so no send pattern repeats (phase-lock check).
      await sleep(jitter ? 5 + Math.random() * 10 : 10);
    }
    channel?.sendMessage('END');
    at('SENT');
  }
}
