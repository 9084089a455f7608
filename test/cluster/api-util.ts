import { ApiException } from '@kubernetes/client-node';

/** metav1.Time: RFC 3339 in whole seconds. */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z');
}

/** metav1.MicroTime wants exactly six fractional digits. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** An API error as one line: the HTTP code and the server's Status, or the message. */
export function apiErrorText(err: unknown): string {
  if (err instanceof ApiException) {
    return `HTTP ${err.code}: ${typeof err.body === 'string' ? err.body : JSON.stringify(err.body)}`;
  }
  return err instanceof Error ? err.message : String(err);
}

export function isApiStatus(err: unknown, ...codes: number[]): boolean {
  return err instanceof ApiException && codes.includes(err.code);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
