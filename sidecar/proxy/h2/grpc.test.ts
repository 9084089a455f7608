import { describe, expect, it } from 'vitest';
import { isGrpc, percentEncode, proxyAnswer } from './grpc.ts';

describe('gRPC answers of the proxy', () => {
  it('recognises gRPC content types only', () => {
    expect(isGrpc('application/grpc')).toBe(true);
    expect(isGrpc('application/grpc+proto')).toBe(true);
    expect(isGrpc('application/json')).toBe(false);
    expect(isGrpc(undefined)).toBe(false);
    expect(isGrpc(['application/grpc'])).toBe(false); // a repeated content-type is not gRPC's
  });

  it('percent-encodes grpc-message as the gRPC spec says', () => {
    expect(percentEncode('edgemesh: no ready endpoint for default/a:80')).toBe(
      'edgemesh: no ready endpoint for default/a:80',
    );
    expect(percentEncode('100% down\n')).toBe('100%25 down%0A');
    expect(percentEncode('café')).toBe('caf%C3%A9');
  });

  it('answers gRPC requests trailers-only with UNAVAILABLE and the message', () => {
    expect(proxyAnswer(503, 'edgemesh: no ready endpoint for service default/a:80\n', true)).toEqual({
      headers: {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': '14',
        'grpc-message': 'edgemesh: no ready endpoint for service default/a:80',
      },
      body: undefined,
    });
  });

  it('answers other requests with the status and a plain-text body', () => {
    expect(proxyAnswer(502, 'edgemesh: upstream failed\n', false)).toEqual({
      headers: { ':status': 502, 'content-type': 'text/plain', 'content-length': 26 },
      body: 'edgemesh: upstream failed\n',
    });
  });
});
