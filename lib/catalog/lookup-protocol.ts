/**
 * The on-demand catalog's body (after `EDGEMESH/1 LOOKUP\n`, lib/gateway-protocol.ts): one
 * long-lived connection per sidecar that multiplexes lookups and keeps a subscription per
 * thing an answer named (linkerd's destination API, one topic per service, on the node).
 *
 * Sidecar → gateway: ASCII lines, at most MAX_QUERY_LINE_BYTES each:
 *
 *   Q <id> SVC <namespace>/<name>    the service (DNS <svc>.<ns>.svc, <host>.<svc>.<ns>.svc, SRV)
 *   Q <id> NS <namespace>            whether the namespace exists (DNS <ns>.svc)
 *   Q <id> IP <ip>                   what has this address: the services whose ClusterIP it is,
 *                                    the services with an endpoint at it (at most
 *                                    MAX_SERVICES_PER_IP) and the pod (PTR, pod DNS names, the
 *                                    proxy's ClusterIP:port and pod-IP routes)
 *   U SVC <namespace>/<name>         drop the subscription (also U POD <ip>, U NS <namespace>)
 *   F <n>                            the highest answer format it reads (lookup-compact.ts: 2,
 *                                    compact service answers; handled by the gateway's hub)
 *
 * Gateway → sidecar: JSON lines (UTF-8, at most MAX_FEED_LINE_BYTES):
 *
 *   {"type":"answer","id":7,"revision":N,"services":{"ns/name":{...}},"pods":{"ip":{...}},
 *    "namespaces":{"ns":{"name":"ns"}}}
 *       what exists for query 7, each thing in it now subscribed; all three records empty:
 *       a negative answer (nothing is subscribed)
 *   {"type":"service","revision":N,"key":"ns/name","entry":{...}|null}   a subscribed service changed
 *   {"type":"pod","revision":N,"ip":"10.244.1.7","pod":{...}|null}        a subscribed pod changed
 *   {"type":"namespace","revision":N,"name":"ns","namespace":{...}|null}  a subscribed namespace
 *   {"type":"keepalive","revision":N}                                     every KEEPALIVE_INTERVAL_MS
 *   {"type":"error","id":7|null,"message":"..."}                          a query refused; id null:
 *                                                                         the connection, which ends
 *
 * Pushes have the feed's line shapes (lib/catalog/feed.ts) and are validated the same way;
 * their revisions are the gateway's, not consecutive for one subscriber (it only sees its
 * topics). Subscriptions live until `U` or the connection ends; a sidecar that reconnects
 * asks again for what it holds.
 */
import { isIP } from 'node:net';
import { decodeFeedLine, type FeedLine } from './feed.ts';
import type { NamespaceInfo, PodInfo, ServiceEntry } from './types.ts';
import {
  canonicalIP,
  checkNamespace,
  checkPod,
  checkServiceEntry,
  entryPath,
  type Path,
} from './validate.ts';

export const MAX_QUERY_LINE_BYTES = 512;
/** An address in more services than this is answered with the first ones (by key). */
export const MAX_SERVICES_PER_IP = 64;
/** Subscriptions one connection may hold (a pod using thousands of services is a bug or an attack). */
export const MAX_SUBSCRIPTIONS = 20_000;

/** What a sidecar looks up; also its subscription topics. */
export type LookupKey =
  | { kind: 'svc'; namespace: string; name: string }
  | { kind: 'ns'; namespace: string }
  | { kind: 'ip'; ip: string };

export type Topic =
  | { kind: 'svc'; key: string }
  | { kind: 'pod'; ip: string }
  | { kind: 'ns'; namespace: string };

export type QueryLine = { type: 'query'; id: number; key: LookupKey } | { type: 'unsubscribe'; topic: Topic };

export interface Answer {
  type: 'answer';
  id: number;
  revision: number;
  services: Record<string, ServiceEntry>;
  pods: Record<string, PodInfo>;
  namespaces: Record<string, NamespaceInfo>;
}

export type LookupError = { type: 'error'; id: number | null; message: string };
export type ReplyLine = Answer | LookupError | FeedLine;

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const MAX_ID = 2 ** 31 - 1;

/** A stable text form of a key (coalescing and cache maps). */
export function keyString(key: LookupKey): string {
  return key.kind === 'svc'
    ? `svc ${key.namespace}/${key.name}`
    : key.kind === 'ns'
      ? `ns ${key.namespace}`
      : `ip ${key.ip}`;
}

export function topicString(topic: Topic): string {
  return topic.kind === 'svc'
    ? `svc ${topic.key}`
    : topic.kind === 'pod'
      ? `pod ${topic.ip}`
      : `ns ${topic.namespace}`;
}

/** The inverse of topicString. */
export function topicFromString(text: string): Topic {
  const sp = text.indexOf(' ');
  const kind = text.slice(0, sp);
  const arg = text.slice(sp + 1);
  if (kind === 'svc') return { kind, key: arg };
  if (kind === 'pod') return { kind, ip: arg };
  if (kind === 'ns') return { kind, namespace: arg };
  throw new Error(`not a topic: ${JSON.stringify(text)}`);
}

export function formatQuery(line: QueryLine): string {
  if (line.type === 'unsubscribe') {
    const t = line.topic;
    return t.kind === 'svc'
      ? `U SVC ${t.key}\n`
      : t.kind === 'pod'
        ? `U POD ${t.ip}\n`
        : `U NS ${t.namespace}\n`;
  }
  const k = line.key;
  const arg =
    k.kind === 'svc' ? `SVC ${k.namespace}/${k.name}` : k.kind === 'ns' ? `NS ${k.namespace}` : `IP ${k.ip}`;
  return `Q ${line.id} ${arg}\n`;
}

function serviceKeyArg(text: string): { namespace: string; name: string } {
  const slash = text.indexOf('/');
  const namespace = text.slice(0, slash);
  const name = text.slice(slash + 1);
  if (slash < 0 || !LABEL.test(namespace) || !LABEL.test(name))
    throw new Error('service must be <namespace>/<name> (DNS labels)');
  return { namespace, name };
}

function namespaceArg(text: string): string {
  if (!LABEL.test(text)) throw new Error('namespace must be a DNS label');
  return text;
}

function ipArg(text: string): string {
  const ip = isIP(text) === 0 ? undefined : canonicalIP(text);
  if (!ip) throw new Error('IP must be an IPv4 or IPv6 address');
  return ip;
}

/** Parses one sidecar line (without its "\n"); throws an Error that says what is wrong. */
export function parseQuery(line: string): QueryLine {
  const parts = line.split(' ');
  if (parts[0] === 'Q' && parts.length === 4) {
    const [, idText, kind, arg] = parts;
    const id = Number(idText);
    if (!/^[1-9]\d{0,9}$/.test(idText) || id > MAX_ID) throw new Error(`query id must be 1..${MAX_ID}`);
    if (kind === 'SVC') return { type: 'query', id, key: { kind: 'svc', ...serviceKeyArg(arg) } };
    if (kind === 'NS') return { type: 'query', id, key: { kind: 'ns', namespace: namespaceArg(arg) } };
    if (kind === 'IP') return { type: 'query', id, key: { kind: 'ip', ip: ipArg(arg) } };
    throw new Error('query kind must be SVC, NS or IP');
  }
  if (parts[0] === 'U' && parts.length === 3) {
    const [, kind, arg] = parts;
    if (kind === 'SVC') {
      const { namespace, name } = serviceKeyArg(arg);
      return { type: 'unsubscribe', topic: { kind: 'svc', key: `${namespace}/${name}` } };
    }
    if (kind === 'POD') return { type: 'unsubscribe', topic: { kind: 'pod', ip: ipArg(arg) } };
    if (kind === 'NS') return { type: 'unsubscribe', topic: { kind: 'ns', namespace: namespaceArg(arg) } };
    throw new Error('unsubscribe kind must be SVC, POD or NS');
  }
  throw new Error('expected "Q <id> SVC|NS|IP <arg>" or "U SVC|POD|NS <arg>"');
}

export const encodeReply = (line: ReplyLine): string => `${JSON.stringify(line)}\n`;

/**
 * An answer line, the same text as encodeReply(answer), with each service entry encoded by
 * `entryJSON`: the gateway passes a cache (its entries never change once made; a new
 * version is a new object), so the pods of a node asking for one service cost one encode.
 */
export function encodeAnswer(answer: Answer, entryJSON: (entry: ServiceEntry) => string): string {
  let services = '';
  for (const key of Object.keys(answer.services))
    services += `${services === '' ? '' : ','}${JSON.stringify(key)}:${entryJSON(answer.services[key])}`;
  return (
    `${answerHead(answer.id, answer.revision)}{${services}},` +
    `"pods":${JSON.stringify(answer.pods)},"namespaces":${JSON.stringify(answer.namespaces)}}\n`
  );
}

/**
 * An answer line is answerHead + the rest; for an answer naming one service and nothing
 * else (a DNS name's lookup, the common miss) the rest is serviceAnswerTail, which depends only
 * on the service's entry: the gateway keeps it per entry and writes head + tail, so an
 * answer builds a few dozen bytes of text however large the entry.
 *
 *   {"type":"answer","id":7,"revision":N,"services":   answerHead(7, N)
 *   {"ns/name":{...entry...}},"pods":{},"namespaces":{}}\n   serviceAnswerTail("ns/name", entryJSON)
 */
export const answerHead = (id: number, revision: number): string =>
  `{"type":"answer","id":${id},"revision":${revision},"services":`;

export const serviceAnswerTail = (key: string, entryJSON: string): string =>
  `{${JSON.stringify(key)}:${entryJSON}},"pods":{},"namespaces":{}}\n`;

function record(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(`${path}: must be an object`);
  return value as Record<string, unknown>;
}

/**
 * Checks a keyed record in place, each key naming its entry (as the catalog's records do), and
 * returns it: the answer's parsed objects are what the sidecar holds (no copy, no path
 * strings unless a check fails: a first DNS query's garbage, docs/scale.md round 5).
 */
function keyed<T>(
  value: unknown,
  path: string,
  max: number,
  check: (v: unknown, path: Path) => T,
  named: (key: string, v: T) => boolean,
): Record<string, T> {
  const o = record(value, path);
  let n = 0;
  for (const key in o) if (Object.hasOwn(o, key)) n++;
  if (n > max) throw new Error(`${path}: at most ${max} entries`);
  for (const key in o) {
    if (!Object.hasOwn(o, key)) continue;
    const item = check(o[key], entryPath(path, key));
    if (!named(key, item)) throw new Error(`${path}[${JSON.stringify(key)}]: key does not name its entry`);
  }
  return o as Record<string, T>;
}

const ANSWER_FIELDS = new Set(['type', 'id', 'revision', 'services', 'pods', 'namespaces']);

/** Exactly the answer's six fields (no array of keys made to compare). */
function answerFields(o: Record<string, unknown>): boolean {
  let n = 0;
  for (const key in o) {
    if (!Object.hasOwn(o, key)) continue;
    if (!ANSWER_FIELDS.has(key)) return false;
    n++;
  }
  return n === ANSWER_FIELDS.size;
}

/** True when a record has an own key (an answer that found something). */
export function hasEntries(o: Record<string, unknown>): boolean {
  for (const key in o) if (Object.hasOwn(o, key)) return true;
  return false;
}

/** Whether `key` is `<namespace>/<name>` of the entry, compared without building that string. */
function namesService(key: string, e: ServiceEntry): boolean {
  const { namespace, name } = e.service;
  return (
    key.length === namespace.length + 1 + name.length &&
    key.charCodeAt(namespace.length) === 0x2f &&
    key.startsWith(namespace) &&
    key.endsWith(name)
  );
}

/** Parses and validates one gateway line (without its "\n"); throws an Error that says what is wrong. */
export function decodeReply(text: string): ReplyLine {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`lookup line is not JSON: ${(err as Error).message}`);
  }
  const o = record(doc, 'lookup line');
  if (o.type === 'answer') {
    if (!answerFields(o))
      throw new Error('answer must have exactly type, id, revision, services, pods, namespaces');
    if (!Number.isSafeInteger(o.id) || (o.id as number) < 1)
      throw new Error('answer id must be a positive integer');
    if (!Number.isSafeInteger(o.revision) || (o.revision as number) < 0)
      throw new Error('answer revision must be a non-negative integer');
    // Checked in place, in the order the copy had (services, pods, namespaces): the parsed
    // line is the answer.
    keyed(o.services, 'answer.services', MAX_SERVICES_PER_IP, checkServiceEntry, namesService);
    keyed(o.pods, 'answer.pods', 2, checkPod, (key, p) => p.ip === key);
    keyed(o.namespaces, 'answer.namespaces', 1, checkNamespace, (key, n) => n.name === key);
    return o as unknown as Answer;
  }
  if (o.type === 'error') {
    if (Object.keys(o).length !== 3 || typeof o.message !== 'string')
      throw new Error('error line must be {"type":"error","id":N|null,"message":"..."}');
    if (o.id !== null && (!Number.isSafeInteger(o.id) || (o.id as number) < 1))
      throw new Error('error id must be a positive integer or null');
    return { type: 'error', id: o.id as number | null, message: o.message.slice(0, 1024) };
  }
  if (o.type === 'snapshot') throw new Error('a snapshot is not a lookup line');
  return decodeFeedLine(text);
}
