import { describe, expect, it } from 'vitest';
import { attemptRefusal } from './udp.ts';

describe('UDP attempt slots (issue 16 item 10)', () => {
  it('one peer holds at most 4, so it cannot fill the 32 that every peer shares', () => {
    const held = Array(4).fill('edge-m');
    expect(attemptRefusal(held.slice(0, 3), 'edge-m')).toBeUndefined();
    expect(attemptRefusal(held, 'edge-m')).toBe('edge-m already holds 4 UDP attempts (at most 4)');
    // Before: one peer's offers took all 32 and the others' were ignored.
    expect(attemptRefusal(held, 'edge-o')).toBeUndefined();
  });

  it('all peers together hold at most 32', () => {
    const held = Array.from({ length: 32 }, (_, i) => `node-${i % 8}`);
    expect(attemptRefusal(held, 'edge-o')).toBe('all 32 UDP attempt slots are in use');
  });
});
