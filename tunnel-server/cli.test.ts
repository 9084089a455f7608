import { describe, expect, it } from 'vitest';
import { parseServers } from '../gateway/tunnel/start.ts';
import { helpText, parseCommand } from '../lib/cli.ts';
import { parseLifetime, tunnelServerCommand } from './cli.ts';

const spec = tunnelServerCommand.spec;

describe('edgemesh tunnel-server flags', () => {
  it('has the contract flag and safe defaults (no relay limit that cuts a transfer)', () => {
    const o = parseCommand(spec, ['--listen', '198.51.100.11:20007'], {});
    expect(o.listen).toBe('198.51.100.11:20007');
    expect(o['relay-max-sessions']).toBe(0);
    expect(o['relay-bytes-per-second']).toBe(0);
    expect(helpText(spec)).toMatch(/--listen VALUE/);
  });

  it('names the flag in every error', () => {
    expect(() => parseCommand(spec, ['--listen', 'nowhere'], {})).toThrow(/--listen: must be ADDR:PORT/);
    expect(() => parseCommand(spec, ['--listen', '1.2.3.4:70000'], {})).toThrow(/--listen/);
    expect(() => parseCommand(spec, ['--gateway-service-account', 'edgemesh-gateway'], {})).toThrow(
      /--gateway-service-account: must be NAMESPACE:NAME/,
    );
    expect(() => parseCommand(spec, ['--relay-max-sessions=-1'], {})).toThrow(
      /--relay-max-sessions: must be >= 0/,
    );
    expect(() => parseCommand(spec, [], { EDGEMESH_RELAY_BYTES_PER_SECOND: 'fast' })).toThrow(
      /relay-bytes-per-second \(from EDGEMESH_RELAY_BYTES_PER_SECOND\): expected an integer/,
    );
  });
});

describe('certificate lifetimes', () => {
  it('take s, m, h or d, 10 s to 3650 d; the error names the flag', () => {
    expect(parseLifetime('90d')).toBe(90 * 86_400_000);
    expect(parseLifetime('20s')).toBe(20_000);
    expect(parseLifetime('5m')).toBe(300_000);
    for (const bad of ['9s', '3651d', '90', '1.5h', '-1d', 'd', '1w'])
      expect(parseLifetime(bad)).toBeUndefined();
    const o = parseCommand(spec, [], {});
    expect(o['node-cert-lifetime']).toBe('90d');
    expect(o['server-cert-lifetime']).toBe('90d');
    expect(() => parseCommand(spec, ['--node-cert-lifetime', '1w'], {})).toThrow(
      /--node-cert-lifetime: must be a number with s, m, h or d/,
    );
  });
});

describe('gateway tunnel-server list', () => {
  it('parses host:port and [v6]:port, refuses the rest naming the flag', () => {
    expect(parseServers(['198.51.100.11:20007', '[fd00::1]:20007'])).toEqual([
      { host: '198.51.100.11', port: 20007 },
      { host: 'fd00::1', port: 20007 },
    ]);
    expect(() => parseServers(['198.51.100.11'])).toThrow(
      /--tunnel-servers: "198.51.100.11" is not HOST:PORT/,
    );
    expect(() => parseServers(['a:0'])).toThrow(/not HOST:PORT/);
  });
});
