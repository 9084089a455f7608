import { describe, expect, it } from 'vitest';
import {
  formatReply,
  formatRequest,
  MAX_HEADER_BYTES,
  parseReply,
  parseRequest,
  takeLine,
} from './gateway-protocol.ts';

describe('gateway protocol', () => {
  it('round-trips requests and replies', () => {
    const reqs = [
      { kind: 'feed', revision: 0 },
      { kind: 'feed', revision: 123456 },
      { kind: 'connect', node: 'edge-a.site-1', ip: '10.1.2.3', port: 8080 },
      { kind: 'connect', node: 'n1', ip: 'fd00::1', port: 1 },
      { kind: 'hello', namespace: 'demo', name: 'web-7d9f.x', uid: '0f3c1f9e-1111-4a4a-9b9b-000000000000' },
    ] as const;
    for (const r of reqs) expect(parseRequest(formatRequest(r).trimEnd())).toEqual(r);
    const replies = [
      { ok: true, path: 'relay' },
      { ok: false, code: 'EDGEMESH_ERR_DIAL_REFUSED', message: '10.0.0.9:22 is not a local pod endpoint' },
    ] as const;
    for (const r of replies) expect(parseReply(formatReply(r).trimEnd())).toEqual(r);
  });

  it('DGRAM: round-trips where served, is refused (never read as CONNECT) where not', () => {
    const r = { kind: 'datagram', node: 'edge-b', ip: '10.244.2.9', port: 5683 } as const;
    const line = formatRequest(r);
    expect(line).toBe('EDGEMESH/1 DGRAM edge-b 10.244.2.9 5683\n');
    expect(parseRequest(line.trimEnd(), { datagram: true })).toEqual(r);
    expect(() => parseRequest(line.trimEnd())).toThrow(
      'DGRAM (UDP flows to other nodes) is not served by this gateway',
    );
    expect(() => parseRequest('EDGEMESH/1 DGRAM edge-b 10.0.0.1 0', { datagram: true })).toThrow(
      'DGRAM port must be 1..65535',
    );
    expect(() => parseRequest('EDGEMESH/1 DGRAM Edge_B 10.0.0.1 53', { datagram: true })).toThrow(
      'DGRAM node is not a valid node name',
    );
  });

  it('rejects malformed requests with a reason', () => {
    const bad: Array<[string, RegExp]> = [
      ['GET / HTTP/1.1', /expected EDGEMESH\/1/],
      ['EDGEMESH/1 FEED -1', /non-negative/],
      ['EDGEMESH/1 FEED 1 2', /unknown request/],
      ['EDGEMESH/1 CONNECT Node_A 10.0.0.1 80', /node name/],
      ['EDGEMESH/1 CONNECT n1 10.0.0.300 80', /IP address/],
      ['EDGEMESH/1 CONNECT n1 10.0.0.1 0', /1\.\.65535/],
      ['EDGEMESH/1 CONNECT n1 10.0.0.1 65536', /1\.\.65535/],
      ['EDGEMESH/1 HELLO Demo web u1', /namespace/],
      ['EDGEMESH/1 HELLO demo web_1 u1', /pod name/],
      ['EDGEMESH/1 HELLO demo web u/1', /uid/],
      ['EDGEMESH/1 HELLO demo web', /unknown request/],
    ];
    for (const [line, reason] of bad) expect(() => parseRequest(line)).toThrow(reason);
    expect(() => parseReply('OK teleport')).toThrow(/unknown path/);
    expect(() => parseReply('HTTP/1.1 200 OK')).toThrow(/malformed/);
  });

  it('takes one line and bounds the header size', () => {
    expect(takeLine(Buffer.from('EDGEMESH/1 FEED 0'))).toBeUndefined();
    const got = takeLine(Buffer.from('EDGEMESH/1 FEED 0\r\nrest'));
    expect(got?.line).toBe('EDGEMESH/1 FEED 0');
    expect(got?.rest.toString()).toBe('rest');
    expect(() => takeLine(Buffer.alloc(MAX_HEADER_BYTES, 0x41))).toThrow(/longer than/);
    expect(() => takeLine(Buffer.from('a\x00b\n'))).toThrow(/non-printable/);
  });
});
