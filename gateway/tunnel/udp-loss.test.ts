/**
 * pathLossReason (udp.ts): the close reason of a UDP path whose peer connection gave up, one
 * row per state it is called with. The text is what the session's error and the `UDP path
 * lost` log carry, so an operator can tell which layer ended the path; the natlab test
 * (test/natlab/udp-path-loss.netns.test.ts) drives the real layers into the first row.
 */
import { describe, expect, it } from 'vitest';
import { pathLossReason } from './udp.ts';

const CASES = [
  {
    state: 'disconnected',
    // libdatachannel: the SCTP association (or DTLS) ended; with ICE still up, usrsctp's
    // retransmission limit under loss, or the peer closing.
    layer: 'SCTP association',
    reason:
      'UDP path lost: the SCTP association (or DTLS) under the data channel ended: retransmission limit reached, or the peer closed it',
  },
  {
    state: 'failed',
    // libdatachannel: ICE (consent checks unanswered for 30 s, RFC 7675) or DTLS failed.
    layer: 'ICE or DTLS',
    reason: 'UDP path lost: ICE or DTLS failed: consent checks unanswered (the peer gone or the path dead)',
  },
] as const;

describe('pathLossReason', () => {
  it.each(CASES)('$state: names the layer that gave up ($layer)', ({ state, layer, reason }) => {
    const got = pathLossReason(state);
    expect(got).toBe(reason);
    expect(got.startsWith('UDP path lost: ')).toBe(true); // one prefix to grep the log for
    expect(got).toContain(layer);
  });

  it('tells the two states apart', () => {
    const reasons = new Set(CASES.map((c) => pathLossReason(c.state)));
    expect(reasons.size).toBe(CASES.length);
  });
});
