import { describe, expect, it } from 'vitest';
import { STUN_RESPONSE_LENGTH, stunResponse } from '../../tunnel-server/stun.ts';
import { bindingRequest, parseBindingResponse } from './stun-client.ts';

describe('STUN client', () => {
  const tid = Buffer.from('000102030405060708090a0b', 'hex');

  it('asks in a form the tunnel-server answers, and reads the answer', () => {
    const req = bindingRequest(tid);
    expect(req.length).toBeGreaterThanOrEqual(STUN_RESPONSE_LENGTH);
    const res = stunResponse(req, { ip: '203.0.113.74', port: 40123 });
    expect(res).toBeDefined();
    expect(parseBindingResponse(res as Buffer, tid)).toEqual({ ip: '203.0.113.74', port: 40123 });
  });

  it('ignores answers to other requests and junk', () => {
    const res = stunResponse(bindingRequest(tid), { ip: '203.0.113.74', port: 1 }) as Buffer;
    expect(parseBindingResponse(res, Buffer.alloc(12))).toBeUndefined();
    expect(parseBindingResponse(Buffer.alloc(10), tid)).toBeUndefined();
    const truncated = Buffer.from(res.subarray(0, 26));
    expect(parseBindingResponse(truncated, tid)).toBeUndefined();
    const lying = Buffer.from(res);
    lying.writeUInt16BE(400, 22); // attribute longer than the message
    expect(parseBindingResponse(lying, tid)).toBeUndefined();
  });
});
