import { describe, expect, it } from 'vitest';
import { stunResponse } from './stun.ts';

// A Binding Request as libjuice (node-datachannel) sends it: SOFTWARE "libjuice" + FINGERPRINT.
const txid = '0102030405060708090a0b0c';
const request = Buffer.from(`000100142112a442${txid}802200086c69626a7569636580280004020cfd56`, 'hex');

describe('STUN binding responder', () => {
  it('answers with the XOR-mapped source address and the same transaction id', () => {
    const r = stunResponse(request, { ip: '203.0.113.70', port: 41001 });
    expect(r?.toString('hex')).toBe(
      // success, length 12, cookie, txid, XOR-MAPPED-ADDRESS len 8, family 1, port^0x2112, addr^cookie
      `0101000c2112a442${txid}00200008` +
        `0001${(41001 ^ 0x2112).toString(16)}${((0xcb007146 ^ 0x2112a442) >>> 0).toString(16)}`,
    );
  });

  it('ignores anything that is not a well-formed Binding Request', () => {
    const from = { ip: '203.0.113.70', port: 1 };
    expect(stunResponse(Buffer.alloc(10), from)).toBeUndefined();
    expect(stunResponse(Buffer.from('000100002112a443' + '00'.repeat(12), 'hex'), from)).toBeUndefined(); // cookie
    expect(stunResponse(Buffer.from('010100002112a442' + '00'.repeat(12), 'hex'), from)).toBeUndefined(); // a response
    expect(stunResponse(Buffer.from('000100042112a442' + '00'.repeat(12), 'hex'), from)).toBeUndefined(); // length lies
    expect(stunResponse(request, { ip: 'fd00::1', port: 1 })).toBeUndefined();
  });

  it('never answers with more bytes than it received (no amplification)', () => {
    const from = { ip: '203.0.113.70', port: 1 };
    const bare = Buffer.from(`000100002112a442${txid}`, 'hex'); // 20 bytes, valid
    expect(stunResponse(bare, from)).toBeUndefined();
    const padded = Buffer.from(`000100082112a442${txid}8022000478787878`, 'hex'); // 28 bytes
    expect(stunResponse(padded, from)).toBeUndefined();
    const enough = Buffer.from(`0001000c2112a442${txid}802200087878787878787878`, 'hex'); // 32 bytes
    expect(stunResponse(enough, from)?.length).toBe(32);
    expect(stunResponse(request, from)?.length).toBeLessThanOrEqual(request.length);
  });
});
