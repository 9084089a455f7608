import { describe, expect, it } from 'vitest';
import {
  parseBirthdaySignal,
  parseRawLine,
  parseToGateway,
  parseToServer,
  plainIp,
  tlsRole,
} from './control.ts';
import { FrameError } from './frame.ts';

describe('control messages', () => {
  it('accepts well-formed messages both ways', () => {
    expect(parseToServer({ t: 'register', lan: ['192.168.1.11'], port: 20006 })).toEqual({
      t: 'register',
      lan: ['192.168.1.11'],
      port: 20006,
    });
    expect(parseToServer({ t: 'connect', id: 'abc', peer: 'node-b' })).toEqual({
      t: 'connect',
      id: 'abc',
      peer: 'node-b',
    });
    const relay = {
      t: 'relay',
      id: 'x1',
      peer: 'node-a',
      token: 'a'.repeat(32),
      role: 'server',
      info: { lan: ['192.168.2.11'], port: 20006, observed: { ip: '203.0.113.74', port: 4000 } },
    };
    expect(parseToGateway(relay)).toEqual(relay);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['unknown type', { t: 'hello' }, /unknown control message "hello"/],
    ['missing t', {}, /unknown control message undefined/],
    ['peer not a node name', { t: 'connect', id: 'a', peer: '../etc' }, /peer is not a node name/],
    ['id too long', { t: 'punch', id: 'x'.repeat(65), peer: 'b' }, /bad id/],
    ['lan not IPs', { t: 'register', lan: ['example.com'], port: 1 }, /up to 16 IP addresses/],
    ['too many LAN addresses', { t: 'register', lan: Array(17).fill('10.0.0.1'), port: 1 }, /up to 16/],
    ['port out of range', { t: 'register', lan: [], port: 70000 }, /bad port/],
    ['huge signal', { t: 'signal', id: 'a', peer: 'b', data: { sdp: 'x'.repeat(20_000) } }, /under 16 KiB/],
  ];
  for (const [name, msg, error] of bad) {
    it(`rejects ${name}`, () => {
      expect(() => parseToServer(msg)).toThrow(error);
      expect(() => parseToServer(msg)).toThrow(FrameError);
    });
  }

  it('rejects gateway-bound messages with bad tokens, roles or addresses', () => {
    expect(() => parseToGateway({ t: 'probe', id: 'a', peer: 'b', token: 'short' })).toThrow(/bad token/);
    expect(() =>
      parseToGateway({ t: 'punch-go', id: 'a', peer: 'b', addr: { ip: '1.2.3.4', port: 1 }, role: 'boss' }),
    ).toThrow(/bad role/);
    expect(() =>
      parseToGateway({ t: 'punch-go', id: 'a', peer: 'b', addr: { ip: 'nope', port: 1 }, role: 'client' }),
    ).toThrow(/addr.ip/);
  });

  it('takes the features a gateway declares, ignoring ones this build does not know', () => {
    expect(
      parseToServer({ t: 'register', lan: [], port: 20006, features: ['site-peers', 'teleport', 7] }),
    ).toEqual({ t: 'register', lan: [], port: 20006, features: ['site-peers'] });
  });

  it('site peers: node names, LAN addresses and ports, a bounded list', () => {
    const ok = { t: 'site-peers', peers: [{ node: 'node2-2', lan: ['192.168.2.12'], port: 20006 }] };
    expect(parseToGateway(ok)).toEqual(ok);
    const peer = (over: Record<string, unknown>) => ({
      t: 'site-peers',
      peers: [{ ...ok.peers[0], ...over }],
    });
    expect(() => parseToGateway(peer({ node: '../x' }))).toThrow(/node is not a node name/);
    expect(() => parseToGateway(peer({ lan: ['example.com'] }))).toThrow(/IP addresses/);
    expect(() => parseToGateway(peer({ port: 0 }))).toThrow(/bad port/);
    expect(() => parseToGateway({ t: 'site-peers', peers: [null] })).toThrow(/bad peer/);
    expect(() => parseToGateway({ t: 'site-peers', peers: Array(33).fill(ok.peers[0]) })).toThrow(
      /at most 32/,
    );
  });

  it('parses raw lines strictly', () => {
    expect(parseRawLine(`EMT1 RELAY ${'0f'.repeat(16)}`)).toEqual({ kind: 'RELAY', token: '0f'.repeat(16) });
    expect(() => parseRawLine('EMT1 RELAY xyz')).toThrow(FrameError);
    expect(() => parseRawLine(`EMT2 PROBE ${'0'.repeat(32)}`)).toThrow(FrameError);
  });

  it('assigns TLS roles consistently from both ends and strips mapped IPv4', () => {
    expect(tlsRole('node-a', 'node-b')).toBe('client');
    expect(tlsRole('node-b', 'node-a')).toBe('server');
    expect(plainIp('::ffff:203.0.113.70')).toBe('203.0.113.70');
    expect(plainIp('fd00::1')).toBe('fd00::1');
  });

  it('birthday signals: the easy side names an address, the hard side an IPv4 address', () => {
    const secret = 'ab'.repeat(16);
    const easy = {
      type: 'birthday',
      step: 'hello',
      nat: 'easy',
      secret,
      addr: { ip: '203.0.113.74', port: 4000 },
    };
    expect(parseBirthdaySignal(easy)).toEqual(easy);
    const hard = { type: 'birthday', step: 'hello', nat: 'hard', secret, ip: '203.0.113.90' };
    expect(parseBirthdaySignal(hard)).toEqual(hard);
    // Fields that do not belong to the sender's class are dropped, not passed on.
    expect(parseBirthdaySignal({ ...hard, addr: { ip: '1.2.3.4', port: 1 } })).toEqual(hard);
    expect(parseBirthdaySignal({ type: 'birthday', step: 'bye', reason: 'x' })).toEqual({
      type: 'birthday',
      step: 'bye',
      reason: 'x',
    });
    expect(() => parseBirthdaySignal({ ...easy, addr: undefined })).toThrow(/bad addr/);
    expect(() => parseBirthdaySignal({ ...hard, ip: 'fd00::1' })).toThrow(/IPv4/);
    expect(() => parseBirthdaySignal({ ...hard, nat: 'medium' })).toThrow(/bad nat/);
    expect(() => parseBirthdaySignal({ ...hard, secret: 'short' })).toThrow(/bad secret/);
    expect(() => parseBirthdaySignal({ ...hard, step: 'go' })).toThrow(/bad step/);
    expect(() => parseBirthdaySignal({ type: 'birthday', step: 'bye', reason: 'x'.repeat(300) })).toThrow(
      /over 256/,
    );
    expect(() => parseBirthdaySignal({ type: 'offer' })).toThrow(FrameError);
  });
});
