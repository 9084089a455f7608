import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GoldenDir } from '../../test/harness/golden.ts';
import {
  type Answer,
  answerHead,
  decodeReply,
  encodeAnswer,
  encodeReply,
  formatQuery,
  parseQuery,
  type QueryLine,
  type ReplyLine,
  serviceAnswerTail,
  topicFromString,
  topicString,
} from './lookup-protocol.ts';
import type { ServiceEntry } from './types.ts';

const golden = new GoldenDir(join(import.meta.dirname, 'testdata'));
afterAll(() => expect(golden.unused('.lookup.golden')).toEqual([]));

const web: ServiceEntry = {
  service: {
    namespace: 'demo',
    name: 'web',
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.10'],
    headless: false,
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    sessionAffinity: { type: 'None' },
    lbPolicy: 'round-robin',
    publishNotReadyAddresses: false,
  },
  endpoints: [
    {
      ip: '10.244.1.7',
      ready: true,
      serving: true,
      terminating: false,
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      nodeName: 'edge-a',
    },
  ],
};

const queries: QueryLine[] = [
  { type: 'query', id: 1, key: { kind: 'svc', namespace: 'demo', name: 'web' } },
  { type: 'query', id: 2, key: { kind: 'ns', namespace: 'empty' } },
  { type: 'query', id: 3, key: { kind: 'ip', ip: '10.96.0.10' } },
  { type: 'query', id: 2147483647, key: { kind: 'ip', ip: '2001:db8::1' } },
  { type: 'unsubscribe', topic: { kind: 'svc', key: 'demo/web' } },
  { type: 'unsubscribe', topic: { kind: 'pod', ip: '10.244.1.7' } },
  { type: 'unsubscribe', topic: { kind: 'ns', namespace: 'empty' } },
];

const replies: ReplyLine[] = [
  {
    type: 'answer',
    id: 1,
    revision: 12,
    services: { 'demo/web': web },
    pods: {},
    namespaces: {},
  },
  {
    type: 'answer',
    id: 3,
    revision: 12,
    services: {},
    pods: { '10.244.1.7': { ip: '10.244.1.7', namespace: 'demo', name: 'web-0', nodeName: 'edge-a' } },
    namespaces: { demo: { name: 'demo' } },
  },
  { type: 'answer', id: 4, revision: 12, services: {}, pods: {}, namespaces: {} },
  { type: 'service', revision: 13, key: 'demo/web', entry: null },
  { type: 'namespace', revision: 14, name: 'empty', namespace: null },
  { type: 'keepalive', revision: 14 },
  { type: 'error', id: 5, message: 'gateway has no catalog yet' },
  { type: 'error', id: null, message: 'query id must be 1..2147483647' },
];

describe('lookup protocol', () => {
  it('formats query lines as the golden file has them, and parses them back', () => {
    const text = queries.map(formatQuery).join('');
    golden.expect('queries.lookup.golden', text);
    const parsed = text
      .trimEnd()
      .split('\n')
      .map((l) => parseQuery(l));
    expect(parsed).toEqual(queries);
  });

  it('encodes gateway lines as the golden file has them, and validates them back', () => {
    const text = replies.map(encodeReply).join('');
    golden.expect('replies.lookup.golden', text);
    expect(
      text
        .trimEnd()
        .split('\n')
        .map((l) => decodeReply(l)),
    ).toEqual(replies);
  });

  it('encodes an answer with its entries encoded apart as the same text as encodeReply', () => {
    const encoded: ServiceEntry[] = [];
    const entryJSON = (e: ServiceEntry) => {
      encoded.push(e);
      return JSON.stringify(e);
    };
    for (const line of replies) {
      if (line.type !== 'answer') continue;
      expect(encodeAnswer(line, entryJSON)).toBe(encodeReply(line));
    }
    const two: Answer = {
      type: 'answer',
      id: 2,
      revision: 9,
      services: { 'demo/web': web, 'demo/db': { ...web, service: { ...web.service, name: 'db' } } },
      pods: {},
      namespaces: { demo: { name: 'demo' } },
    };
    encoded.length = 0;
    expect(encodeAnswer(two, entryJSON)).toBe(encodeReply(two));
    expect(encoded).toEqual([two.services['demo/web'], two.services['demo/db']]);
  });

  it('splits a one-service answer into a head and a tail that depends on the entry only', () => {
    const one: Answer = {
      type: 'answer',
      id: 2_147_483_647,
      revision: 12,
      services: { 'demo/web': web },
      pods: {},
      namespaces: {},
    };
    const line = answerHead(one.id, one.revision) + serviceAnswerTail('demo/web', JSON.stringify(web));
    expect(line).toBe(encodeReply(one));
    expect(decodeReply(line.trimEnd())).toEqual(one);
  });

  it('refuses bad query lines with a reason', () => {
    const cases: [string, RegExp][] = [
      ['Q 0 SVC demo/web', /query id must be 1\.\./],
      ['Q 2147483648 SVC demo/web', /query id/],
      ['Q 01 SVC demo/web', /query id/],
      ['Q 1 SVC demo', /service must be <namespace>\/<name>/],
      ['Q 1 SVC Demo/web', /DNS labels/],
      ['Q 1 SVC demo/web/x', /DNS labels/],
      ['Q 1 NS -x', /namespace must be a DNS label/],
      ['Q 1 IP 10.0.0.256', /IPv4 or IPv6/],
      ['Q 1 PTR 10.0.0.1', /SVC, NS or IP/],
      ['U SVC', /expected/],
      ['U POD demo/web', /IPv4 or IPv6/],
      ['Q 1  SVC demo/web', /expected/],
      ['', /expected/],
    ];
    for (const [line, why] of cases) expect(() => parseQuery(line), line).toThrow(why);
    // IPv6 is taken in any spelling and kept canonical.
    expect(parseQuery('Q 9 IP 2001:DB8:0::1')).toEqual({
      type: 'query',
      id: 9,
      key: { kind: 'ip', ip: '2001:db8::1' },
    });
  });

  it('refuses bad gateway lines with a reason', () => {
    const answer = { type: 'answer', id: 1, revision: 1, services: {}, pods: {}, namespaces: {} };
    const cases: [unknown, RegExp][] = [
      [{ ...answer, extra: 1 }, /exactly/],
      [{ ...answer, id: 0 }, /answer id/],
      [{ ...answer, services: { 'demo/other': web } }, /key does not name its entry/],
      [
        { ...answer, pods: { '10.0.0.1': { ip: '10.0.0.2', namespace: 'a', name: 'b', nodeName: 'n' } } },
        /key/,
      ],
      [{ ...answer, namespaces: { a: { name: 'a' }, b: { name: 'b' } } }, /at most 1/],
      [{ type: 'snapshot', catalog: {} }, /not a lookup line/],
      [{ type: 'error', id: 'x', message: 'm' }, /error id/],
      [{ type: 'service', revision: 1, key: 'demo/web', entry: { service: {} } }, /endpoints: is required/],
    ];
    for (const [doc, why] of cases)
      expect(() => decodeReply(JSON.stringify(doc)), JSON.stringify(doc)).toThrow(why);
    expect(() => decodeReply('{')).toThrow(/not JSON/);
  });

  it('topics round-trip through their text form', () => {
    for (const q of queries)
      if (q.type === 'unsubscribe') expect(topicFromString(topicString(q.topic))).toEqual(q.topic);
  });
});
