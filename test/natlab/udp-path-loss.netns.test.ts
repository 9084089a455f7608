import type { ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness/netns.ts';
import { NatLab } from './lab.ts';
import { LoggedProcesses } from './logged-processes.ts';

/**
 * The UDP path's peer connection under loss (issue 15): gateway/tunnel/testing/loss-peer.ts on
 * a node of each of two `reject` sites (the case where the tunnel takes the UDP path), with
 * udp.ts's RtcConfig. Once the channel is open, B's node drops DTLS application-data records
 * (record type 23: SCTP data, SACKs, heartbeats; STUN and the handshake pass) arriving at
 * it, then A sends COUNT numbered messages 10 ms apart. Every mode is bounded in count
 * (COUNT messages) and time (the waits below); the checks count, no timing.
 */
const NODE = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
const PEER = new URL('../../gateway/tunnel/testing/loss-peer.ts', import.meta.url).pathname;
/** 15 s of messages at 10 ms: hundreds of drops at any of the loss rates below. */
const COUNT = 1500;

/** iptables matches for "a DTLS application-data record" (first UDP payload byte 23). */
const DTLS_DATA = ['-p', 'udp', '-m', 'u32', '--u32', '0>>22&0x3C@8>>24=23'];
const LOSS: Record<string, string[]> = {
  periodic: [...DTLS_DATA, '-m', 'statistic', '--mode', 'nth', '--every', '4', '--packet', '3'],
  periodic5: [...DTLS_DATA, '-m', 'statistic', '--mode', 'nth', '--every', '5', '--packet', '4'],
  random: [...DTLS_DATA, '-m', 'statistic', '--mode', 'random', '--probability', '0.2'],
  random25: [...DTLS_DATA, '-m', 'statistic', '--mode', 'random', '--probability', '0.25'],
  'periodic-any': ['-p', 'udp', '-m', 'statistic', '--mode', 'nth', '--every', '4', '--packet', '3'],
};

describe('UDP path under loss (two reject NATs)', () => {
  let lab: NatLab;
  const procs = new LoggedProcesses((ns, argv) => lab.netns.spawn(ns, [NODE, PEER, ...argv]));
  const logs = procs.logs;

  beforeAll(async () => {
    lab = await NatLab.create({
      prefix: 'upl',
      sites: [
        { mapping: 'preserving', inbound: 'reject', nodes: 1 },
        { mapping: 'preserving', inbound: 'reject', nodes: 1 },
      ],
      tunnelServers: 1,
    });
  }, 120_000);

  afterAll(async () => {
    await lab?.cleanup();
  });

  afterEach(async () => {
    // The drop rule goes with the attempt.
    procs.killAll();
    await lab.netns.exec(lab.sites[1].nodes[0].ns, ['iptables', '-F', 'INPUT']);
  });

  const start = (name: string, ns: string, argv: string[]) => procs.start(name, ns, argv);

  async function run(mode: string) {
    const ts = lab.tunnelServers[0];
    const port = String(3478 + Object.keys(LOSS).indexOf(mode));
    start('stun', ts.ns, ['stun', ts.addr, port]);
    await waitFor(() => (logs.get('stun') ?? '').includes('READY'), 20_000, 50, 'STUN responder');
    const [A, B] = [lab.sites[0].nodes[0], lab.sites[1].nodes[0]];
    const stun = `${ts.addr}:${port}`;
    // LOSS_JITTER=1: the sender's pace varies (does the periodic drop need a steady sender?).
    const jitter = process.env.LOSS_JITTER ? ['jitter'] : [];
    const offer = start('A', A.ns, ['offer', 'node-a', stun, String(COUNT), ...jitter]);
    const answer = start('B', B.ns, ['answer', 'node-b', stun, String(COUNT)]);
    const relay = (from: ChildProcess, to: ChildProcess) => {
      let text = '';
      from.stdout?.on('data', (d: Buffer) => {
        text += d.toString();
        const lines = text.split('\n');
        text = lines.pop() ?? '';
        for (const line of lines) if (line.startsWith('SIGNAL ')) to.stdin?.write(`${line.slice(7)}\n`);
      });
    };
    relay(offer, answer);
    relay(answer, offer);
    const log = () =>
      `A:\n${(logs.get('A') ?? '').replace(/^SIGNAL.*\n/gm, '').slice(-6000)}\nB:\n${(logs.get('B') ?? '').replace(/^SIGNAL.*\n/gm, '').slice(-6000)}`;
    await waitFor(
      () => !!logs.get('A')?.includes('OPEN') && !!logs.get('B')?.includes('OPEN'),
      30_000,
      50,
      `channel open\n${log()}`,
    );
    await lab.netns.exec(B.ns, ['iptables', '-I', 'INPUT', ...LOSS[mode], '-j', 'DROP']);
    offer.stdin?.write('GO\n');
    await waitFor(() => !!logs.get('B')?.includes('RESULT '), COUNT * 10 + 60_000, 100, 'the result').catch(
      (err) => {
        throw new Error(`${(err as Error).message}\n${log()}`);
      },
    );
    const counters = await lab.netns.exec(B.ns, ['iptables', '-nvxL', 'INPUT']);
    const line = (logs.get('B') ?? '').split('\n').find((l) => l.startsWith('RESULT ')) ?? '';
    const result = JSON.parse(line.slice(7)) as { received: number; ordered: boolean; state: string };
    // The DROP rule's packet count (iptables -nvxL: first column of the rule's line).
    const rule = counters.stdout.split('\n').find((l) => l.includes('DROP')) ?? '';
    const drops = Number(rule.trim().split(/\s+/)[0]);
    return { result, drops, log: `${log()}\n${counters.stdout}` };
  }

  // Random loss up to a quarter of the records: SCTP repairs it and the path stays up.
  it('20 % random loss of DTLS data records: the path stays up and every message arrives in order', async () => {
    const { result, drops, log } = await run('random');
    expect(drops, log).toBeGreaterThan(100); // the loss really happened (~20 % of ~1,800 records)
    expect(result, log).toEqual({ received: COUNT, ordered: true, state: 'connected' });
  }, 200_000);

  // Skipped: fails in every run so far (10 of 10: every 4th DTLS data record 7/7, every 4th UDP
  // packet 3/3, dropped at B). B delivers up to the first dropped message and never gets any of its
  // retransmissions; ~1-3 s later A's SCTP association is aborted with ICE still connected
  // (libdatachannel `SCTP disconnected`), which is usrsctp's limit of 5 retransmissions
  // (libdatachannel v0.24.5 sctptransport.cpp:140-143), not settable through
  // node-datachannel 0.33.4 (its setSctpSettings reads 6 of rtc::SctpSettings' 12 fields,
  // src/cpp/rtc-wrapper.cpp:167-197). The path is lost, not replaced, and a transfer on it
  // breaks. Evidence and what would fix it: docs/tunnel.md *The UDP path under loss*.
  // LOSS_MODES=periodic,periodic-any runs the reproductions (periodic5, every 5th, stays up).
  it.skip('every 4th DTLS data record dropped: the path stays up (usrsctp retransmission limit, see above)', async () => {
    const { result, log } = await run('periodic');
    expect(result, log).toEqual({ received: COUNT, ordered: true, state: 'connected' });
  }, 200_000);

  for (const mode of (process.env.LOSS_MODES ?? '').split(',').filter((m) => m in LOSS)) {
    it(`reproduction (LOSS_MODES): ${mode} loss`, async () => {
      const { result, log } = await run(mode);
      console.log(log);
      expect(result, log).toEqual({ received: COUNT, ordered: true, state: 'connected' });
    }, 200_000);
  }
});
