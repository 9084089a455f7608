import { describe, expect, it } from 'vitest';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { NAT_KEEP, NatLog } from './nat-log.ts';

describe('NatLog', () => {
  it('keeps the latest first, at most NAT_KEEP of each kind, without peer addresses', () => {
    let now = 1_000;
    const nat = new NatLog(() => now++);
    for (let i = 0; i < NAT_KEEP + 4; i++) nat.probe('ts-0', 40_000 + i, `203.0.113.1:${40_000 + i}`);
    nat.punch(
      'node-b',
      'tcp',
      new EdgemeshError(
        ErrorCodes.UNAVAILABLE,
        'TCP punch to 203.0.113.2:40001 failed: connect ECONNREFUSED 203.0.113.2:40001',
      ),
    );
    nat.punch('node-c', 'udp');
    const { probes, punches } = nat.snapshot();
    expect(probes).toHaveLength(NAT_KEEP);
    expect(probes[0]).toEqual({
      at: 1_019,
      server: 'ts-0',
      localPort: 40_019,
      observed: '203.0.113.1:40019',
    });
    expect(punches).toEqual([
      { at: 1_021, peer: 'node-c', transport: 'udp', outcome: 'connected' },
      {
        at: 1_020,
        peer: 'node-b',
        transport: 'tcp',
        outcome: 'refused',
        detail: 'EDGEMESH_ERR_UNAVAILABLE: TCP punch to ADDR failed: connect ECONNREFUSED ADDR',
      },
    ]);
  });
});
