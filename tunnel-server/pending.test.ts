import { describe, expect, it } from 'vitest';
import { MAX_PENDING_PER_NODE, PendingRequests } from './pending.ts';

describe('PendingRequests', () => {
  it('caps each node separately and frees a slot once per release', () => {
    const p = new PendingRequests(2);
    const r1 = p.hold('edge-a');
    p.hold('edge-a');
    expect(p.full('edge-a')).toBe(true);
    expect(p.full('edge-b')).toBe(false);
    r1();
    r1();
    expect(p.count('edge-a')).toBe(1);
    expect(p.full('edge-a')).toBe(false);
  });

  it('defaults to 64 per node', () => {
    const p = new PendingRequests();
    for (let i = 0; i < MAX_PENDING_PER_NODE; i++) p.hold('edge-a');
    expect(MAX_PENDING_PER_NODE).toBe(64);
    expect(p.full('edge-a')).toBe(true);
  });
});
