import type dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Address } from '../../lib/tunnel/control.ts';
import {
  ACK_DELAY_MS,
  DatagramLane,
  DEAD_MS,
  KEEPALIVE_MS,
  PUNCH_INTERVAL_MS,
  PUNCH_MS,
} from './dgram-lane.ts';
import { FakeClock } from './fake-clock.ts';
import { LANE_KEY_BYTES, laneKeys, ProbeKind, sealProbe } from './lane-probe.ts';

/**
 * Two lanes on fake sockets behind two NATs that pass a datagram in only from an address
 * their side has sent to (address- and port-dependent filtering, as the NAT lab's `drop`
 * routers and most home routers do): the lane state machine without a network.
 */
class Net {
  readonly sockets = new Map<string, FakeSocket>();
  /** Per socket, the addresses it sent to: its NAT's open mappings. */
  readonly opened = new Map<FakeSocket, Set<string>>();
  /** Addresses whose packets are lost (a link cut). */
  readonly cut = new Set<string>();
  /** Every datagram sent, by source. */
  readonly log: { from: string; to: string; bytes: Buffer }[] = [];

  deliver(from: FakeSocket, bytes: Buffer, port: number, ip: string): void {
    const to = `${ip}:${port}`;
    this.log.push({ from: from.addr, to, bytes });
    this.opened.get(from)?.add(to);
    if (this.cut.has(from.addr) || this.cut.has(to)) return;
    const target = this.sockets.get(to);
    if (!target || !this.opened.get(target)?.has(from.addr)) return; // no mapping: dropped
    const [addr, p] = from.addr.split(':');
    target.emit('message', Buffer.from(bytes), {
      address: addr,
      port: Number(p),
      family: 'IPv4',
      size: bytes.length,
    });
  }
}

class FakeSocket extends EventEmitter {
  readonly net: Net;
  addr: string;
  constructor(net: Net, addr: string) {
    super();
    this.net = net;
    this.addr = addr;
    net.sockets.set(addr, this);
    net.opened.set(this, new Set());
  }
  send(bytes: Buffer, port: number, ip: string): void {
    this.net.deliver(this, bytes, port, ip);
  }
  address() {
    return { address: '0.0.0.0', family: 'IPv4', port: Number(this.addr.split(':')[1]) };
  }
  getSendQueueSize(): number {
    return 0;
  }
  close(): void {
    this.emit('close');
  }
}

const material = Buffer.from(Array.from({ length: LANE_KEY_BYTES }, (_, i) => 255 - i));
const A_PUBLIC = { ip: '203.0.113.1', port: 40001 };
const B_PUBLIC = { ip: '198.51.100.2', port: 40002 };
const text = (a: Address) => `${a.ip}:${a.port}`;

describe('datagram lane', () => {
  let clock: FakeClock;
  let net: Net;
  let a: DatagramLane;
  let b: DatagramLane;
  let sa: FakeSocket;
  let sb: FakeSocket;
  let states: string[];

  beforeEach(() => {
    clock = new FakeClock();
    net = new Net();
    states = [];
    sa = new FakeSocket(net, text(A_PUBLIC));
    sb = new FakeSocket(net, text(B_PUBLIC));
    const lane = (s: FakeSocket, role: 'client' | 'server', name: string) =>
      new DatagramLane({
        socket: s as unknown as dgram.Socket,
        keys: laneKeys(material, role),
        clock,
        onState: (state) => states.push(`${name} ${state}`),
      });
    a = lane(sa, 'client', 'a');
    b = lane(sb, 'server', 'b');
  });

  it('comes up on both sides through two filtering NATs, and then carries messages', async () => {
    const got: Buffer[] = [];
    b.onMessage((m) => got.push(m as Buffer));
    expect(a.isOpen()).toBe(false);
    expect(a.sendMessageBinary(Buffer.from([1, 2, 3]))).toBe(false); // not up: not sent
    // Each side was offered the other's public address and one that leads nowhere.
    a.probe([{ ip: '192.168.9.9', port: 40002 }, B_PUBLIC]);
    await clock.advance(0);
    // A's first probe was dropped at B's NAT (B had sent nothing to A yet).
    expect(b.state).toBe('punching');
    b.probe([A_PUBLIC]);
    await clock.advance(0);
    // B's probe passes A's NAT (A sent to B), A answers, B takes the answer: both up.
    expect(a.state).toBe('up');
    expect(b.state).toBe('up');
    expect(text(a.peer as Address)).toBe(text(B_PUBLIC));
    expect(text(b.peer as Address)).toBe(text(A_PUBLIC));
    expect(states).toEqual(['a up', 'b up']);
    expect(a.sendMessageBinary(Buffer.from([1, 2, 3]))).toBe(true);
    expect(got).toEqual([Buffer.from([1, 2, 3])]);
    // Up: one keepalive per KEEPALIVE_MS, to the peer only, no longer to every candidate.
    const before = net.log.length;
    await clock.advance(KEEPALIVE_MS * 2);
    const after = net.log.slice(before).filter((d) => d.from === text(A_PUBLIC));
    expect(after.map((d) => d.to)).toEqual([text(B_PUBLIC), text(B_PUBLIC), text(B_PUBLIC), text(B_PUBLIC)]);
    // Two are A's keepalives, two its answers to B's.
  });

  it('goes down without probes for DEAD_MS, falls back, and comes back up', async () => {
    a.probe([B_PUBLIC]);
    b.probe([A_PUBLIC]);
    await clock.advance(PUNCH_INTERVAL_MS);
    expect(a.isOpen()).toBe(true);
    net.cut.add(text(B_PUBLIC));
    await clock.advance(DEAD_MS + KEEPALIVE_MS);
    expect(a.state).toBe('down');
    expect(a.isOpen()).toBe(false);
    expect(a.sendMessageBinary(Buffer.from('x'))).toBe(false);
    net.cut.clear();
    await clock.advance(KEEPALIVE_MS + 1);
    expect(a.state).toBe('up');
    expect(states.filter((s) => s.startsWith('a'))).toEqual(['a up', 'a down', 'a up']);
  });

  it('moves to the address of the newest authenticated probe, and never on a replay', async () => {
    a.probe([B_PUBLIC]);
    b.probe([A_PUBLIC]);
    await clock.advance(PUNCH_INTERVAL_MS);
    // An attacker on the path keeps one of B's probes and plays it again from its own address.
    const captured = net.log.find((d) => d.from === text(B_PUBLIC) && d.bytes[1] === ProbeKind.PROBE);
    expect(captured).toBeDefined();
    const evil = new FakeSocket(net, '192.0.2.66:6666');
    sa.send(Buffer.alloc(1), 6666, '192.0.2.66'); // A's NAT open to it: the worst case
    evil.send(captured?.bytes as Buffer, A_PUBLIC.port, A_PUBLIC.ip);
    expect(a.counters.refused.stale).toBe(1);
    expect(text(a.peer as Address)).toBe(text(B_PUBLIC));
    // B's NAT gives it a new port (a rebinding): its next probe moves A there.
    net.sockets.delete(text(B_PUBLIC));
    const moved = '198.51.100.2:40999';
    sb.addr = moved;
    net.sockets.set(moved, sb);
    net.opened.get(sa)?.add(moved); // A's NAT: as if A had answered there before
    await clock.advance(KEEPALIVE_MS);
    expect(text(a.peer as Address)).toBe(moved);
  });

  it('refuses forged, reflected and foreign datagrams without answering them', async () => {
    a.probe([B_PUBLIC]);
    b.probe([A_PUBLIC]);
    await clock.advance(PUNCH_INTERVAL_MS);
    const sentByA = () => net.log.filter((d) => d.from === text(A_PUBLIC)).length;
    const n = sentByA();
    const probeFromB = (kind: number, counter: number) =>
      sealProbe(laneKeys(material, 'server').send, kind as 1, counter);
    const forged = probeFromB(ProbeKind.PROBE, 1_000);
    forged[20] ^= 1;
    sb.send(forged, A_PUBLIC.port, A_PUBLIC.ip);
    // A's own probe reflected back at it by B's side.
    sb.send(sealProbe(laneKeys(material, 'client').send, ProbeKind.PROBE, 2_000), A_PUBLIC.port, A_PUBLIC.ip);
    expect(a.counters.refused.auth).toBe(2);
    expect(sentByA()).toBe(n); // nothing answered
    // Anything that is not a probe goes to the channel (which authenticates it).
    const got: Buffer[] = [];
    a.onMessage((m) => got.push(m as Buffer));
    sb.send(Buffer.from([1, 0, 0]), A_PUBLIC.port, A_PUBLIC.ip);
    sb.send(Buffer.alloc(0), A_PUBLIC.port, A_PUBLIC.ip);
    expect(got.map((g) => g.length)).toEqual([3, 0]);
  });

  it('probes a silent peer at a bounded rate: fast for PUNCH_MS, then once per KEEPALIVE_MS', async () => {
    a.probe([B_PUBLIC, { ip: '192.168.9.9', port: 40002 }]);
    await clock.advance(60_000);
    const sent = net.log.filter((d) => d.from === text(A_PUBLIC)).length;
    const rounds = PUNCH_MS / PUNCH_INTERVAL_MS + 1 + (60_000 - PUNCH_MS) / KEEPALIVE_MS;
    expect(sent).toBeLessThanOrEqual(2 * (rounds + 1));
    expect(sent).toBeGreaterThanOrEqual(2 * (PUNCH_MS / PUNCH_INTERVAL_MS));
    expect(a.state).toBe('punching');
  });

  it('acknowledges what it opened every ACK_EVERY messages or ACK_DELAY_MS after one: the far window moves', async () => {
    a.probe([B_PUBLIC]);
    b.probe([A_PUBLIC]);
    await clock.advance(PUNCH_INTERVAL_MS);
    for (let seq = 0; seq < 20; seq++) {
      expect(a.congestion.admit()).toBe(true);
      a.congestion.sent(seq);
    }
    expect(a.window.inFlight).toBe(20);
    // The channel on B opened 17 of them (3 lost): an ACK at the 16th, one more 5 ms after the 17th.
    for (const seq of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]) b.congestion.opened(seq);
    expect(a.window.inFlight).toBe(4);
    b.congestion.opened(19);
    expect(a.window.inFlight).toBe(4);
    await clock.advance(ACK_DELAY_MS);
    expect(a.window.inFlight).toBe(0);
    expect(a.window.counters).toMatchObject({ delivered: 17, lost: 3 });
    // ACKs neither move the lane nor count as probes taken.
    expect(text(a.peer as Address)).toBe(text(B_PUBLIC));
  });

  it('closes with its socket and stops its timer', async () => {
    const closed: string[] = [];
    a.onClosed(() => closed.push('a'));
    a.probe([B_PUBLIC]);
    sa.close();
    expect(a.state).toBe('closed');
    expect(closed).toEqual(['a']);
    const n = net.log.length;
    await clock.advance(60_000);
    expect(net.log.length).toBe(n);
    expect(clock.pending()).toEqual([]);
  });
});
