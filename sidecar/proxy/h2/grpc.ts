/**
 * What a gRPC client needs from a proxy that answers for itself. gRPC clients read the status
 * from `grpc-status`, not from `:status`: a plain 502/503 reaches the app as "Received HTTP
 * status code 503" with our message lost. So, as Envoy does, a request whose content-type is
 * `application/grpc…` gets a trailers-only response: HTTP 200, `grpc-status: 14`
 * (UNAVAILABLE, which gRPC clients may retry) and the message in `grpc-message`.
 */
import type { OutgoingHttpHeaders } from 'node:http2';

/** gRPC status code UNAVAILABLE: https://grpc.github.io/grpc/core/md_doc_statuscodes.html */
export const GRPC_UNAVAILABLE = 14;

export function isGrpc(contentType: string | string[] | undefined): boolean {
  return typeof contentType === 'string' && contentType.startsWith('application/grpc');
}

/**
 * `grpc-message` encoding (gRPC over HTTP/2, "Responses"): UTF-8, then every byte outside
 * printable ASCII 0x20–0x7E, and `%` itself, as %XX.
 */
export function percentEncode(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The head of the proxy's own answer: trailers-only gRPC UNAVAILABLE for gRPC requests (sent
 * with END_STREAM, no body), else `status` with a plain-text body of `body`'s length.
 */
export function proxyAnswer(
  status: number,
  body: string,
  grpc: boolean,
): { headers: OutgoingHttpHeaders; body: string | undefined } {
  if (grpc) {
    return {
      headers: {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(GRPC_UNAVAILABLE),
        'grpc-message': percentEncode(body.trimEnd()),
      },
      body: undefined,
    };
  }
  return {
    headers: { ':status': status, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) },
    body,
  };
}
