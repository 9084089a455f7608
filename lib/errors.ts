/**
 * Errors with stable codes. Every error a user can see carries an `EDGEMESH_ERR_*` code so
 * logs, metrics and docs can refer to it; the message says what went wrong and what to do.
 */
export const ErrorCodes = {
  CONFIG: 'EDGEMESH_ERR_CONFIG',
  BAD_REQUEST: 'EDGEMESH_ERR_BAD_REQUEST',
  IPTABLES: 'EDGEMESH_ERR_IPTABLES',
  CATALOG: 'EDGEMESH_ERR_CATALOG',
  TUNNEL_FRAME: 'EDGEMESH_ERR_TUNNEL_FRAME',
  TUNNEL_AUTH: 'EDGEMESH_ERR_TUNNEL_AUTH',
  DIAL_REFUSED: 'EDGEMESH_ERR_DIAL_REFUSED',
  UNAVAILABLE: 'EDGEMESH_ERR_UNAVAILABLE',
  INTERNAL: 'EDGEMESH_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class EdgemeshError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'EdgemeshError';
  }
}

export const configError = (message: string): EdgemeshError => new EdgemeshError(ErrorCodes.CONFIG, message);
export const badRequest = (message: string): EdgemeshError =>
  new EdgemeshError(ErrorCodes.BAD_REQUEST, message);

/** A short, single-line description of any thrown value, for logs and error responses. */
export function describeError(err: unknown): string {
  if (err instanceof EdgemeshError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}
