import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { FakeClock } from './fake-clock.ts';
import { HEALTH_PING_INTERVAL_MS } from './path-choice.ts';
import {
  type LinkRef,
  type PathSession,
  Peer,
  type PeerContext,
  RELAY_REPLACE_MIN_INTERVAL_MS,
  UPGRADE_RETRY_START_MS,
  UPGRADE_SEARCH_MAX_MS,
} from './peer.ts';

// The per-peer path state machine (peer.ts) with fake sessions, fake tunnel-server links and a
// fake clock: what each event does to the paths and to the planned search, without a network.

class FakeSession extends EventEmitter<{ close: [] }> implements PathSession {
  usable = true;
  rttMs: number | undefined = 2;
  streamCount = 0;
  bytesIn = 0;
  bytesOut = 0;
  closeError: Error | undefined;
  goneAway: string | undefined;
  closed = false;

  goAway(reason: string): void {
    this.goneAway = reason;
    this.usable = false;
    if (this.streamCount === 0) this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.usable = false;
    this.emit('close');
  }
}

/** A session whose keepalive PINGs answer as the test says (its health is judged). */
class PingingSession extends FakeSession {
  /** What the next PINGs answer: an RTT in ms, or lost. */
  answer: number | 'lost' = 2;
  pings = 0;

  ping(): Promise<number> {
    this.pings++;
    const a = this.answer;
    return a === 'lost' ? Promise.reject(new Error('PING not answered')) : Promise.resolve(a);
  }
}

interface Line {
  level: string;
  obj: Record<string, unknown>;
  msg: string | undefined;
}

function recordingLogger(lines: Line[]): Logger {
  const at =
    (level: string) =>
    (obj: object | string, msg?: string): void => {
      lines.push({ level, obj: typeof obj === 'string' ? {} : (obj as Record<string, unknown>), msg });
    };
  const log: Logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => log,
  };
  return log;
}

const SERVER_A: LinkRef = { label: '198.51.100.10:20007' };
const SERVER_B: LinkRef = { label: '198.51.100.11:20007' };
const linkWithRtt = (label: string, rttMs: number | undefined): LinkRef => ({ label, rttMs });

/** One peer, `node-b`, seen from `self`; tunnel-servers answer as the test sets. */
function harness(self = 'node-a') {
  const clock = new FakeClock();
  const lines: Line[] = [];
  const h = {
    clock,
    lines,
    /** Tunnel-server links registered now. */
    servers: [SERVER_A, SERVER_B] as LinkRef[],
    /** What a TCP punch does. */
    punch: 'fail' as 'fail' | 'connect' | 'hang',
    relays: [] as FakeSession[],
    /** Punched sessions made so far (punch 'connect'). */
    punchedSessions: [] as FakeSession[],
    /** Relays made from now on answer PINGs (their health is judged). */
    pingingRelays: false,
    health: [] as string[],
    requests: [] as string[],
    peer: undefined as unknown as Peer<FakeSession, LinkRef>,
    /** `retryInMs` of each "no direct path" line so far. */
    retries: () =>
      lines.filter((l) => l.msg === 'no direct path; staying on the relay').map((l) => l.obj.retryInMs),
    punches: () => h.requests.filter((r) => r.startsWith('punch')).length,
  };
  const ctx: PeerContext<FakeSession, LinkRef> = {
    self,
    log: recordingLogger(lines),
    clock,
    techniques: { lan: false, tcpPunch: true, udp: false, birthday: false },
    linksUp: (first) => h.servers.map((_, i) => h.servers[(first + i) % h.servers.length]),
    requestRelay: async (link, peer) => {
      h.requests.push(`connect ${peer} at ${link.label}`);
      // As the `relay` answer does: the leg is joined before the request settles.
      const session = h.pingingRelays ? new PingingSession() : new FakeSession();
      h.relays.push(session);
      h.peer.add('relay', session, `tcp via ${link.label}`, link.label);
    },
    requestPunch: async (link, peer) => {
      h.requests.push(`punch ${peer} at ${link.label}`);
      if (h.punch === 'connect') {
        const session = new FakeSession();
        h.punchedSessions.push(session);
        h.peer.add('punched', session, 'tcp');
        return;
      }
      if (h.punch === 'hang') return new Promise<void>(() => undefined);
      throw new EdgemeshError(ErrorCodes.UNAVAILABLE, `${link.label} did not answer punch in 6000 ms`);
    },
    connectUdp: () => undefined,
    dialLan: () => Promise.reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'no LAN address answered')),
    pathUp: () => undefined,
    budgetReset: () => undefined,
    pathHealth: (kind, degraded) => h.health.push(`${kind} ${degraded ? 'degraded' : 'recovered'}`),
  };
  h.peer = new Peer(ctx, 'node-b');
  return h;
}

/** On the relay, with `failures` searches behind it that found nothing. */
async function onRelayAfter(h: ReturnType<typeof harness>, failures: number): Promise<void> {
  await h.peer.session();
  await h.clock.advance(0); // the search a new relay asks for at once
  for (let i = 1; i < failures; i++) await h.clock.advance((h.peer.nextUpgradeAt ?? 0) - h.clock.now());
}

describe('Peer: establishing', () => {
  it('opens a relay at the first link up, then plans a search for a direct path at once', async () => {
    const h = harness();
    const session = await h.peer.session();
    expect(session).toBe(h.relays[0]);
    expect(h.requests).toEqual(['connect node-b at 198.51.100.10:20007']);
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now());
    expect(h.peer.status()).toMatchObject({
      node: 'node-b',
      path: 'relay',
      paths: { relay: { transport: 'tcp via 198.51.100.10:20007', via: '198.51.100.10:20007' } },
      firstUseAt: h.clock.now(),
    });
  });

  it('without a tunnel-server (and no LAN path) says so, naming the peer', async () => {
    const h = harness();
    h.servers = [];
    await expect(h.peer.session()).rejects.toThrow(
      'no path to node node-b: EDGEMESH_ERR_UNAVAILABLE: no tunnel-server is reachable',
    );
  });
});

describe('Peer: the search for a better path (c14aa9f)', () => {
  it('backs off 30 s doubling while servers answer and the NATs let nothing through', async () => {
    const h = harness();
    await onRelayAfter(h, 4);
    expect(h.retries()).toEqual([30_000, 60_000, 120_000, 240_000]);
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now() + 240_000);
  });

  it('a search with no tunnel-server up does not double the backoff', async () => {
    const h = harness();
    await h.peer.session();
    h.servers = []; // the servers go away before the search runs: nothing to punch through
    await h.clock.advance(0);
    await h.clock.advance(30_000);
    await h.clock.advance(30_000);
    expect(h.punches()).toBe(0);
    expect(h.retries()).toEqual([30_000, 30_000, 30_000]);
  });

  it('an earlier search replaces a later planned one', async () => {
    const h = harness();
    await onRelayAfter(h, 3); // next search planned 120 s ahead
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now() + 120_000);
    const punches = h.punches();
    // The relay is lost; the new relay asks for a search at once, ahead of the planned one,
    // and it runs now (before c14aa9f it waited for the planned one, up to 10 min away).
    h.relays[0].close();
    await h.clock.advance(0); // failover (this end is the TLS client: at once), then the search
    expect(h.relays).toHaveLength(2);
    expect(h.punches()).toBe(punches + 1);
    // The planned one was replaced, not kept beside it: one search planned, at the backoff.
    expect(h.clock.pending()).toEqual([h.clock.now() + 240_000]);
  });

  it('a later search does not replace an earlier planned one', async () => {
    const h = harness();
    await onRelayAfter(h, 1); // next search in 30 s
    await h.clock.advance(29_900);
    h.clock.nextRandom = 0.5; // a server link up now would plan one in 500 ms
    h.peer.linkUp();
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now() + 100);
  });

  it('a server link coming up restarts the search for a peer on the relay, backoff reset', async () => {
    const h = harness();
    await onRelayAfter(h, 3); // backed off: next search in 120 s, then 240 s
    h.clock.nextRandom = 0.25;
    h.peer.linkUp();
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now() + 250); // spread over 1 s
    await h.clock.advance(250);
    expect(h.retries().at(-1)).toBe(UPGRADE_RETRY_START_MS);
    expect(h.clock.pending()).toEqual([h.clock.now() + UPGRADE_RETRY_START_MS]);
  });

  it('a search whose attempt never settles ends after UPGRADE_SEARCH_MAX_MS and plans the next (no peer left on the relay for good)', async () => {
    const h = harness();
    h.punch = 'hang';
    await h.peer.session();
    await h.clock.advance(0); // the search starts; its punch never answers
    expect(h.peer.nextUpgradeAt).toBeUndefined();
    await h.clock.advance(UPGRADE_SEARCH_MAX_MS);
    expect(h.retries()).toEqual([UPGRADE_RETRY_START_MS]);
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now() + UPGRADE_RETRY_START_MS);
    expect(h.lines.some((l) => l.msg === 'direct-path search cut short: an attempt did not settle')).toBe(
      true,
    );
    // The next search runs, and finds the path once punching works again.
    h.punch = 'connect';
    await h.clock.advance(UPGRADE_RETRY_START_MS);
    expect(h.peer.status().path).toBe('punched');
  });

  it('a server link coming up leaves a peer with a direct or punched path alone', async () => {
    const h = harness();
    h.punch = 'connect';
    await onRelayAfter(h, 1);
    expect(h.peer.status().path).toBe('punched');
    expect(h.peer.nextUpgradeAt).toBeUndefined();
    h.peer.linkUp();
    expect(h.peer.nextUpgradeAt).toBeUndefined();
    expect(h.clock.pending()).toEqual([]);
  });

  it('a lost punched path with the relay still up plans a search again, and it finds the path', async () => {
    const h = harness();
    h.punch = 'connect';
    await onRelayAfter(h, 1);
    expect(h.peer.status().path).toBe('punched');
    // A new stream needs the relay again (as after a cloud outage), then the punched path dies.
    h.peer.add('relay', new FakeSession(), 'tcp via ts-0', 'ts-0');
    expect(h.peer.status().paths.punched).toBeDefined();
    const before = h.punches();
    h.punchedSessions.at(-1)?.close();
    expect(h.peer.nextUpgradeAt).toBeDefined();
    await h.clock.advance(1_000);
    expect(h.punches()).toBe(before + 1);
    expect(h.peer.status().path).toBe('punched');
  });

  it('a relay the peer asked for plans a search here too, after the peer has had its turn', async () => {
    const h = harness();
    h.punch = 'connect';
    // The peer's relay request joined here (manager.ts relay handler): no session() on this side.
    h.peer.add('relay', new FakeSession(), 'tcp via ts-0', 'ts-0');
    expect(h.peer.nextUpgradeAt).toBe(h.clock.now() + UPGRADE_RETRY_START_MS);
    await h.clock.advance(UPGRADE_RETRY_START_MS);
    expect(h.punches()).toBe(1);
    expect(h.peer.status().path).toBe('punched');
  });

  it('a search is not skipped for a punched session that no longer takes streams (closing, not yet closed)', async () => {
    const h = harness();
    h.punch = 'connect';
    await onRelayAfter(h, 1);
    const stale = h.punchedSessions.at(-1) as FakeSession;
    stale.usable = false; // dead or going away; its close comes later
    h.peer.add('relay', new FakeSession(), 'tcp via ts-0', 'ts-0');
    h.peer.linkUp();
    const before = h.punches();
    await h.clock.advance(1_000);
    expect(h.punches()).toBe(before + 1);
    expect(h.peer.status().path).toBe('punched');
  });

  it('a punched path found: new streams take it, the relay is sent away, no search is planned', async () => {
    const h = harness();
    await onRelayAfter(h, 2);
    h.punch = 'connect';
    await h.clock.advance(60_000);
    expect(h.relays[0].goneAway).toBe('direct path found');
    expect(h.peer.status()).toMatchObject({ path: 'punched', paths: { punched: { transport: 'tcp' } } });
    expect(h.peer.nextUpgradeAt).toBeUndefined();
    expect(h.clock.pending()).toEqual([]);
  });
});

describe('Peer: paths', () => {
  it('a lost relay is replaced through the next replica: the TLS client end at once', async () => {
    const h = harness('node-a'); // node-a < node-b: TLS client
    await h.peer.session();
    h.relays[0].close();
    await h.clock.advance(0);
    expect(h.requests.filter((r) => r.startsWith('connect'))).toEqual([
      'connect node-b at 198.51.100.10:20007',
      'connect node-b at 198.51.100.11:20007',
    ]);
  });

  it('a lost relay is replaced by the TLS server end only if still without a path 1 s later', async () => {
    const h = harness('node-z'); // node-z > node-b: TLS server
    const connects = () => h.requests.filter((r) => r.startsWith('connect'));
    await h.peer.session();
    h.relays[0].close();
    await h.clock.advance(999);
    expect(connects()).toHaveLength(1);
    // The other end's relay arrives meanwhile: nothing more is asked.
    h.peer.add('relay', new FakeSession(), 'tcp via 198.51.100.11:20007', '198.51.100.11:20007');
    await h.clock.advance(1);
    expect(connects()).toHaveLength(1);
  });

  it('UDP loses to a usable TCP punched path; TCP replaces UDP', () => {
    const h = harness();
    const udp = new FakeSession();
    h.peer.add('punched', udp, 'udp');
    const tcp = new FakeSession();
    tcp.streamCount = 1;
    h.peer.add('punched', tcp, 'tcp');
    expect(udp.goneAway).toBe('replaced by a newer session');
    const late = new FakeSession();
    h.peer.add('punched', late, 'udp');
    expect(late.closed).toBe(true);
    expect(h.peer.best()).toBe(tcp);
  });

  it('status counts the bytes of closed sessions with the open ones', () => {
    const h = harness();
    const a = new FakeSession();
    a.bytesIn = 100;
    a.bytesOut = 10;
    h.peer.add('relay', a, 'tcp via r1', 'r1');
    a.close();
    const b = new FakeSession();
    b.bytesIn = 5;
    b.bytesOut = 1;
    h.peer.add('direct', b, 'tcp');
    expect(h.peer.status()).toEqual({
      node: 'node-b',
      path: 'direct',
      rttMs: 2,
      paths: {
        direct: { rttMs: 2, streams: 0, transport: 'tcp', upAt: h.clock.now(), bytesIn: 5, bytesOut: 1 },
      },
      bytesIn: 105,
      bytesOut: 11,
      firstUseAt: undefined,
      nextUpgradeAt: undefined,
    });
  });

  it("status tells a path's datagram counts (a copy), and nothing for a path that carried none", () => {
    const h = harness();
    const udp = Object.assign(new FakeSession(), {
      datagrams: { sent: 7, dropped: 1, framed: 2, received: 6, refused: 0, overflow: 0 },
    });
    h.peer.add('punched', udp, 'udp');
    const quiet = Object.assign(new FakeSession(), {
      datagrams: { sent: 0, dropped: 0, framed: 0, received: 0, refused: 0, overflow: 0 },
    });
    h.peer.add('relay', quiet, 'tcp via r1', 'r1');
    const told = h.peer.status().paths;
    expect(told.punched?.datagrams).toEqual({
      sent: 7,
      dropped: 1,
      framed: 2,
      received: 6,
      refused: 0,
      overflow: 0,
    });
    expect(told.relay && 'datagrams' in told.relay).toBe(false);
    udp.datagrams.sent++;
    expect(told.punched?.datagrams?.sent).toBe(7); // a copy: the document does not move under the reader
  });

  it('closed: sessions added later are closed, nothing is planned', async () => {
    const h = harness();
    await h.peer.session();
    h.peer.close();
    expect(h.relays[0].closed).toBe(true);
    const s = new FakeSession();
    h.peer.add('direct', s, 'tcp');
    expect(s.closed).toBe(true);
    expect(h.clock.pending()).toEqual([]);
  });
});

describe('Peer: path choice by measurement (path-choice.ts)', () => {
  it('asks the replica with the fastest control link for the relay, the others in RTT order after it', async () => {
    const h = harness();
    const slow = linkWithRtt('ts1', 40);
    const fast = linkWithRtt('ts2', 3);
    const mid = linkWithRtt('ts3', 15);
    h.servers = [slow, fast, mid];
    const session = await h.peer.session();
    expect(h.requests).toEqual(['connect node-b at ts2']);
    expect(h.peer.status().paths.relay?.via).toBe('ts2');
    expect(session).toBe(h.relays[0]);
  });

  it('falls back in RTT order when the fastest refuses', async () => {
    const h = harness();
    h.servers = [linkWithRtt('ts1', 40), linkWithRtt('ts2', 3), linkWithRtt('ts3', 15)];
    let refused = 0;
    // The first two requests fail as a full replica would answer.
    const realAdd = h.peer.add.bind(h.peer);
    h.peer.add = (kind, session, transport, via) => {
      if (kind === 'relay' && refused < 2) {
        refused++;
        session.close();
        return;
      }
      realAdd(kind, session, transport, via);
    };
    await h.peer.session();
    expect(h.requests).toEqual(['connect node-b at ts2', 'connect node-b at ts3', 'connect node-b at ts1']);
  });

  it('a degraded direct path keeps its streams; new streams take a relay opened for them; recovery frees it', async () => {
    const h = harness();
    const direct = new PingingSession();
    direct.answer = 1;
    h.peer.add('direct', direct, 'tcp');
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 3); // a baseline of 1 ms
    expect(h.peer.best()).toBe(direct);
    expect(h.requests).toEqual([]);
    direct.answer = 'lost';
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 2);
    expect(h.health).toEqual(['direct degraded']);
    const degradedHealth = h.peer.status().paths.direct?.health;
    expect(degradedHealth).toMatchObject({ degraded: true, why: { kind: 'loss', lost: 2, of: 5 } });
    expect(degradedHealth?.lastRttMs).toBeUndefined(); // the last ping was lost
    const since = degradedHealth?.since ?? 0;
    expect(since).toBeGreaterThan(0);
    expect(h.requests).toEqual([`connect node-b at ${SERVER_A.label}`]);
    expect(h.peer.best()).toBe(h.relays[0]);
    expect(direct.goneAway).toBeUndefined(); // its open streams carry on
    direct.answer = 1;
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 3);
    expect(h.health).toEqual(['direct degraded', 'direct recovered']);
    const recovered = h.peer.status().paths.direct?.health;
    expect(recovered).toMatchObject({ degraded: false, lastRttMs: 1 });
    expect(recovered?.why).toBeUndefined();
    expect(recovered?.since).toBeGreaterThan(since); // the recovery's own time, not the degradation's
    expect(h.peer.best()).toBe(direct);
    expect(h.relays[0].goneAway).toBe('direct path recovered');
  });

  it('an RTT spike on the direct path moves new streams the same way', async () => {
    const h = harness();
    const direct = new PingingSession();
    direct.answer = 5;
    h.peer.add('direct', direct, 'tcp');
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 3);
    direct.answer = 400;
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 2);
    expect(h.health).toEqual(['direct degraded']);
    expect(h.peer.status().paths.direct?.health).toMatchObject({
      degraded: true,
      why: { kind: 'rtt-spike', rttMs: 400, baselineMs: 5 },
      lastRttMs: 400,
    });
    expect(h.peer.best()).toBe(h.relays[0]);
    expect(h.lines.some((l) => l.msg === 'tunnel path degraded: new streams take the next best path')).toBe(
      true,
    );
  });

  it('a degraded relay is replaced through another replica, at most once per 30 s', async () => {
    const h = harness();
    h.pingingRelays = true;
    const connects = () => h.requests.filter((r) => r.startsWith('connect'));
    h.servers = [linkWithRtt('ts1', 3), linkWithRtt('ts2', 30)];
    await h.peer.session();
    const first = h.relays[0] as PingingSession;
    expect(h.peer.status().paths.relay?.via).toBe('ts1');
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 3);
    first.answer = 'lost';
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 2);
    expect(connects()).toEqual(['connect node-b at ts1', 'connect node-b at ts2']);
    expect(first.goneAway).toBe('replaced by a newer session');
    expect(h.peer.status().paths.relay?.via).toBe('ts2');
    // The new relay degrading at once (this gateway's own uplink, say) does not churn relays.
    (h.relays[1] as PingingSession).answer = 'lost';
    await h.clock.advance(HEALTH_PING_INTERVAL_MS * 2);
    expect(connects()).toHaveLength(2);
    expect(h.peer.best()).toBe(h.relays[1]); // degraded, but nothing else is usable
    await h.clock.advance(RELAY_REPLACE_MIN_INTERVAL_MS);
    expect(connects()).toHaveLength(2); // the verdict did not change again: no new replacement
  });

  it('sessions that cannot ping are never judged (no timers for them)', () => {
    const h = harness();
    h.peer.add('direct', new FakeSession(), 'tcp');
    expect(h.clock.pending()).toEqual([]);
  });
});
