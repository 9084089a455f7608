import { describe, expect, it } from 'vitest';
import { connectionCause } from './bootstrap.ts';

const fetchFailed = (cause: object) => new TypeError('fetch failed', { cause });

describe('webhook-tls: why a request got no answer', () => {
  it('unwraps fetch failed', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6443'), { code: 'ECONNREFUSED' });
    expect(connectionCause(fetchFailed(refused))).toBe('cannot connect: connection refused (ECONNREFUSED)');
    const tls = Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(connectionCause(fetchFailed(tls))).toBe(
      'TLS: self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)',
    );
  });

  it('keeps other errors as they are', () => {
    expect(connectionCause(new Error('HTTP protocol is not allowed'))).toBe('HTTP protocol is not allowed');
  });
});
