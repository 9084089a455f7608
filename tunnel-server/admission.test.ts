import { describe, expect, it } from 'vitest';
import { ConnectionCaps } from './admission.ts';

describe('ConnectionCaps', () => {
  it('refuses past the per-IP cap and the total cap, and counts closes back', () => {
    const c = new ConnectionCaps({ maxConnections: 3, maxConnectionsPerIp: 2 });
    expect(c.admit('198.51.100.1')).toBeUndefined();
    expect(c.admit('198.51.100.1')).toBeUndefined();
    expect(c.admit('198.51.100.1')).toBe('connection-limit-ip');
    expect(c.admit('203.0.113.5')).toBeUndefined();
    expect(c.admit('203.0.113.6')).toBe('connection-limit');
    expect([c.total, c.from('198.51.100.1')]).toEqual([3, 2]);
    c.leave('198.51.100.1');
    expect(c.admit('203.0.113.6')).toBeUndefined();
    c.leave('203.0.113.6');
    expect([c.total, c.from('203.0.113.6')]).toEqual([2, 0]);
  });
});
