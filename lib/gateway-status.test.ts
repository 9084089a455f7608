import { describe, expect, it } from 'vitest';
import { parseGatewayStatus, STATUS_FORMAT } from './gateway-status.ts';

// The reader's validation of the fields added with control-link RTTs, path health, the NAT
// class and birthday tallies: /status is outside input to `edgemesh status`, so a wrong field
// is an error naming it, and an older gateway's document (without them) still reads.

const NOW = Date.UTC(2026, 11, 6, 8, 0, 0);

/** An older gateway's document: none of the new fields. */
const olderDoc = () => ({
  format: STATUS_FORMAT,
  node: 'edge-1',
  now: NOW,
  ready: true,
  readiness: 'ready',
  tunnel: {
    state: 'running',
    detail: 'tunnel: running, 1 of 1 tunnel-servers connected',
    listenPort: 20006,
    servers: [{ address: '198.51.100.200:20006', name: 'ts-0', up: true, observed: '203.0.113.70:40123' }],
  },
  peers: [
    {
      node: 'edge-2',
      path: 'relay',
      rttMs: 4,
      firstUseAt: NOW - 60_000,
      nextUpgradeAt: null,
      bytesIn: 1,
      bytesOut: 2,
      paths: [
        {
          path: 'relay',
          transport: 'tcp via ts-0',
          via: 'ts-0',
          rttMs: 4,
          streams: 1,
          upAt: NOW - 50_000,
          bytesIn: 1,
          bytesOut: 2,
        },
      ],
    },
  ],
  omittedPeers: 0,
  nat: { probes: [], punches: [] },
});

// biome-ignore lint/suspicious/noExplicitAny: tests write arbitrary JSON into the document
type Doc = Record<string, any>;

/** A current gateway's document: every new field set. */
const newDoc = (): Doc => {
  const d: Doc = olderDoc();
  Object.assign(d.tunnel.servers[0], { rttMs: 3.2, preferredRelay: true });
  d.peers[0].paths[0].health = {
    state: 'degraded',
    since: NOW - 7_000,
    why: { kind: 'loss', lost: 2, of: 5 },
    lastRttMs: null,
  };
  d.nat.class = { nat: 'hard', at: NOW - 240_000 };
  d.nat.birthdays = [{ peer: 'edge-2', lastAt: NOW - 100_000, outcomes: { 'no-hit': 2, connected: 1 } }];
  return d;
};

const parse = (d: unknown) => parseGatewayStatus(d, 'gateway g');
const broken = (mutate: (d: Doc) => void) => {
  const d = newDoc();
  mutate(d);
  return () => parse(d);
};

describe('gateway /status: the new fields', () => {
  it("reads an older gateway's document, the new fields left undefined", () => {
    const s = parse(olderDoc());
    expect(s.tunnel.servers[0]).not.toHaveProperty('rttMs');
    expect(s.tunnel.servers[0]).not.toHaveProperty('preferredRelay');
    expect(s.peers[0].paths[0]).not.toHaveProperty('health');
    expect(s.nat.class).toBeUndefined();
    expect(s.nat.birthdays).toBeUndefined();
    // A document from before the nat section reads too.
    const d: Doc = olderDoc();
    delete d.nat;
    expect(parse(d).nat).toEqual({ probes: [], punches: [] });
  });

  it('reads every new field', () => {
    const s = parse(newDoc());
    expect(s.tunnel.servers[0]).toMatchObject({ rttMs: 3.2, preferredRelay: true });
    expect(s.peers[0].paths[0].health).toEqual({
      state: 'degraded',
      since: NOW - 7_000,
      why: { kind: 'loss', lost: 2, of: 5 },
      lastRttMs: null,
    });
    expect(s.nat.class).toEqual({ nat: 'hard', at: NOW - 240_000 });
    expect(s.nat.birthdays).toEqual([
      { peer: 'edge-2', lastAt: NOW - 100_000, outcomes: { 'no-hit': 2, connected: 1 } },
    ]);
  });

  it('keeps null apart from absent: measured nothing yet vs an older gateway', () => {
    const d = newDoc();
    d.tunnel.servers[0].rttMs = null;
    d.peers[0].paths[0].health = null;
    d.nat.class = null;
    const s = parse(d);
    expect(s.tunnel.servers[0].rttMs).toBeNull();
    expect(s.peers[0].paths[0].health).toBeNull();
    expect(s.nat.class).toBeNull();
  });

  it('reads an RTT spike with its RTT and baseline', () => {
    const d = newDoc();
    d.peers[0].paths[0].health.why = { kind: 'rtt-spike', rttMs: 320, baselineMs: 0.8 };
    expect(parse(d).peers[0].paths[0].health?.why).toEqual({
      kind: 'rtt-spike',
      rttMs: 320,
      baselineMs: 0.8,
    });
  });

  it('refuses a wrong field, naming it', () => {
    const f = 'peers[0].paths[0].health';
    const cases: [(d: Doc) => void, string][] = [
      [(d) => (d.tunnel.servers[0].rttMs = 'fast'), 'tunnel.servers[0].rttMs is not a round-trip time in ms'],
      [(d) => (d.tunnel.servers[0].rttMs = -1), 'tunnel.servers[0].rttMs is not a round-trip time in ms'],
      [
        (d) => (d.tunnel.servers[0].preferredRelay = 1),
        'tunnel.servers[0].preferredRelay is not true or false',
      ],
      [(d) => (d.peers[0].paths[0].health = 'ok'), `${f} is not an object`],
      [(d) => (d.peers[0].paths[0].health.state = 'sick'), `${f}.state is not one of ok, degraded`],
      [(d) => (d.peers[0].paths[0].health.since = 'now'), `${f}.since is not a non-negative integer`],
      [
        (d) => (d.peers[0].paths[0].health.lastRttMs = Number.NaN),
        `${f}.lastRttMs is not a round-trip time in ms`,
      ],
      [(d) => (d.peers[0].paths[0].health.why = []), `${f}.why is not an object`],
      [
        (d) => (d.peers[0].paths[0].health.why.kind = 'bad luck'),
        `${f}.why.kind is not one of loss, rtt-spike`,
      ],
      [(d) => (d.peers[0].paths[0].health.why.lost = 2.5), `${f}.why.lost is not a non-negative integer`],
      [(d) => (d.peers[0].paths[0].health.why.lost = 6), `${f}.why.lost is 6, more than ${f}.why.of (5)`],
      [
        (d) => (d.peers[0].paths[0].health.why = { kind: 'rtt-spike', rttMs: 320 }),
        `${f}.why.baselineMs is missing`,
      ],
      [(d) => (d.nat.class = 'hard'), 'nat.class is not an object'],
      [(d) => (d.nat.class.nat = 'symmetric'), 'nat.class.nat is not one of easy, hard, unknown'],
      [(d) => delete d.nat.class.at, 'nat.class.at is not a non-negative integer'],
      [(d) => (d.nat.birthdays = {}), 'nat.birthdays is not a list'],
      [
        (d) => (d.nat.birthdays = Array(65).fill(d.nat.birthdays[0])),
        'nat.birthdays has 65 entries, more than 64',
      ],
      [(d) => (d.nat.birthdays[0].peer = 7), 'nat.birthdays[0].peer is not a string'],
      [(d) => (d.nat.birthdays[0].outcomes = null), 'nat.birthdays[0].outcomes is not an object'],
      [
        (d) => (d.nat.birthdays[0].outcomes = { won: 1 }),
        'nat.birthdays[0].outcomes key "won" is not one of connected, no-hit, failed, skipped',
      ],
      [
        (d) => (d.nat.birthdays[0].outcomes.connected = -1),
        'nat.birthdays[0].outcomes.connected is not a non-negative integer',
      ],
    ];
    for (const [mutate, message] of cases) expect(broken(mutate)).toThrow(`gateway g: ${message}`);
  });
});
