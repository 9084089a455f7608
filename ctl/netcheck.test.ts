import { afterAll, describe, expect, it } from 'vitest';
import { readinessAnswer } from '../gateway/readiness.ts';
import { gatewayStatus } from '../gateway/status.ts';
import type { TunnelReadiness } from '../gateway/streams.ts';
import { punchOutcome, withoutAddresses } from '../gateway/tunnel/nat-log.ts';
import type { NatObservations, TunnelStatus } from '../gateway/tunnel/status.ts';
import { parseGatewayStatus } from '../lib/gateway-status.ts';
import { GoldenDir } from '../test/harness/golden.ts';
import { formatNetcheck } from './netcheck.ts';

// `edgemesh netcheck` (issue 17 item 3): the tunnel's NAT observations, through the gateway's
// /status document and its validation, to the report: testdata/<case>.netcheck.golden.

const NOW = Date.UTC(2026, 11, 6, 8, 0, 0);
const running: TunnelReadiness = {
  state: 'running',
  ready: true,
  detail: 'tunnel: running, 2 of 2 tunnel-servers connected',
  serversUp: 2,
  servers: 2,
};

function report(
  servers: TunnelStatus['servers'],
  nat: NatObservations,
  readiness: TunnelReadiness | null = running,
) {
  const tunnel: TunnelStatus | undefined = readiness
    ? { node: 'edge-1', listenPort: 20006, servers, peers: [], nat }
    : undefined;
  const doc = gatewayStatus({
    node: 'edge-1',
    now: NOW,
    ready: readinessAnswer({ synced: true, revision: 1, tunnel: readiness ?? undefined }),
    readiness: readiness ?? undefined,
    tunnel,
  });
  return formatNetcheck(parseGatewayStatus(JSON.parse(JSON.stringify(doc)), 'edge-1'));
}

const link = (name: string, observed: string, localPort: number) => ({
  address: `${name}.example.net:20006`,
  name,
  up: true,
  observed,
  localPort,
});

const CASES: { name: string; text: string }[] = [
  {
    // Port-preserving NAT whose router answers unsolicited SYNs with RST: TCP refused, UDP works.
    name: 'preserving-rst',
    text: report([link('ts-0', '203.0.113.70:40123', 40123), link('ts-1', '203.0.113.70:40124', 40124)], {
      probes: [{ at: NOW - 5000, server: 'ts-0', localPort: 41000, observed: '203.0.113.70:41000' }],
      punches: [
        { at: NOW - 4000, peer: 'edge-4', transport: 'udp', outcome: 'connected' },
        {
          at: NOW - 4500,
          peer: 'edge-4',
          transport: 'tcp',
          outcome: 'refused',
          detail: 'TCP punch to ADDR failed: connect ECONNREFUSED ADDR',
        },
      ],
    }),
  },
  {
    // Symmetric NAT: ports rewritten, punches unanswered.
    name: 'symmetric',
    text: report([link('ts-0', '203.0.113.90:61002', 40123), link('ts-1', '203.0.113.91:58810', 40124)], {
      probes: [],
      punches: [
        {
          at: NOW - 1000,
          peer: 'edge-2',
          transport: 'tcp',
          outcome: 'no-answer',
          detail: 'TCP punch to ADDR failed: connect ADDR timed out',
        },
        {
          at: NOW - 900,
          peer: 'edge-2',
          transport: 'udp',
          outcome: 'no-answer',
          detail: 'ICE did not connect in 8000 ms',
        },
      ],
    }),
  },
  {
    name: 'nothing-yet',
    text: report([{ address: 'ts.example.net:20006', name: undefined, up: false, observed: undefined }], {
      probes: [],
      punches: [],
    }),
  },
  { name: 'off', text: report([], { probes: [], punches: [] }, null) },
];

describe('edgemesh netcheck output (golden)', () => {
  const golden = new GoldenDir(new URL('./testdata', import.meta.url).pathname);
  for (const c of CASES)
    it(c.name, () => {
      golden.expect(`${c.name}.netcheck.golden`, c.text);
    });
  afterAll(() => {
    expect(golden.unused('.netcheck.golden')).toEqual([]);
  });
});

describe('punch outcomes', () => {
  it("leave peers' addresses out of what /status shows", () => {
    expect(
      withoutAddresses('TCP punch to 203.0.113.78:41500 failed: connect ECONNREFUSED 203.0.113.78:41500'),
    ).toBe('TCP punch to ADDR failed: connect ECONNREFUSED ADDR');
    expect(withoutAddresses('connect [fd00::1]:20006 timed out')).toBe('connect ADDR timed out');
  });

  it('tell a RST from silence from the errors the tunnel gives', () => {
    expect(punchOutcome('TCP punch to 1.2.3.4:5 failed: connect ECONNREFUSED 1.2.3.4:5')).toBe('refused');
    expect(punchOutcome('TCP punch to 1.2.3.4:5 failed: connect 1.2.3.4:5 timed out')).toBe('no-answer');
    expect(punchOutcome('ICE did not connect in 8000 ms')).toBe('no-answer');
    expect(punchOutcome('punch-go without a probe')).toBe('failed');
  });
});
