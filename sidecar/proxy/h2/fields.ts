/**
 * Header field rules of RFC 9113 §8.2–8.3 that a relay must enforce itself (nghttp2 did it for
 * the node:http2 path): a request that breaks them is malformed, a stream error
 * PROTOCOL_ERROR. Fields are the flat [name, value, …] list hpack.ts decodes.
 */

/** What routing, metrics and retries need of a request head. */
export interface RequestHead {
  method: string;
  path: string;
  authority: string | undefined;
  contentType: string | undefined;
}

/** Connection-specific fields (§8.2.2): never in HTTP/2. */
const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const BAD_VALUE = /[\0\r\n]/;
/** Names already checked (they repeat on every request): bounded so hostile names cannot grow it. */
const goodNames = new Set<string>();

function checkName(name: string): string | undefined {
  if (goodNames.has(name)) return undefined;
  if (!TOKEN.test(name)) return `field name ${JSON.stringify(name.slice(0, 40))} is not a lowercase token`;
  if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
  if (goodNames.size < 1000) goodNames.add(name);
  return undefined;
}

/** The request head, or why it is malformed (a string). */
export function parseRequest(fields: readonly string[]): RequestHead | string {
  let method: string | undefined;
  let path: string | undefined;
  let scheme: string | undefined;
  let authority: string | undefined;
  let contentType: string | undefined;
  let regular = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    if (BAD_VALUE.test(value)) return `field ${name.slice(0, 40)} has NUL, CR or LF in its value`;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return `pseudo-header ${name} after a regular field`;
      if (name === ':method') {
        if (method !== undefined) return 'two :method';
        method = value;
      } else if (name === ':path') {
        if (path !== undefined) return 'two :path';
        path = value;
      } else if (name === ':scheme') {
        if (scheme !== undefined) return 'two :scheme';
        scheme = value;
      } else if (name === ':authority') {
        if (authority !== undefined) return 'two :authority';
        authority = value;
      } else return `unknown pseudo-header ${name.slice(0, 40)}`;
      continue;
    }
    regular = true;
    const bad = checkName(name);
    if (bad) return bad;
    if (name === 'te' && value !== 'trailers')
      return `te: ${value.slice(0, 40)} (only "trailers" is allowed)`;
    if (name === 'content-type' && contentType === undefined) contentType = value;
  }
  if (!method) return 'no :method';
  if (method === 'CONNECT') return 'CONNECT is not proxied';
  if (!path) return 'no :path';
  if (!scheme) return 'no :scheme';
  return { method, path, authority, contentType };
}

/** A response head's :status (100–599), or undefined when it has none or a bad one. */
export function responseStatus(fields: readonly string[]): number | undefined {
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] !== ':status') continue;
    const v = fields[i + 1] as string;
    if (v.length !== 3) return undefined;
    const n = Number(v);
    return n >= 100 && n <= 599 ? n : undefined;
  }
  return undefined;
}

/** The first value of `name` (lowercase), if any. */
export function fieldValue(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}
