import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_AGE_MS, MAX_PEERS, PeerBook, parsePeerBook } from './peer-book.ts';

const NOW = 1_800_000_000_000;

describe('parsePeerBook', () => {
  it('keeps valid records and canonicalises their addresses', () => {
    const { peers, dropped } = parsePeerBook(
      JSON.stringify({
        'node2-1': {
          lan: ['192.168.2.11', 'FD00::0:11'],
          port: 20006,
          public: '203.0.113.2',
          seenAt: NOW - 1000,
        },
      }),
      NOW,
    );
    expect(dropped).toEqual([]);
    expect(peers.get('node2-1')).toEqual({
      lan: ['192.168.2.11', 'fd00::11'],
      port: 20006,
      public: '203.0.113.2',
      seenAt: NOW - 1000,
    });
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['a name that is no node name', { Node_1: { lan: [], port: 1, seenAt: NOW } }, /not a node name/],
    ['a port out of range', { n1: { lan: [], port: 70000, seenAt: NOW } }, /port/],
    ['no seenAt', { n1: { lan: [], port: 1 } }, /seenAt/],
    ['a month-old record', { n1: { lan: [], port: 1, seenAt: NOW - MAX_AGE_MS - 1 } }, /older/],
  ];
  for (const [name, book, reason] of bad)
    it(`drops ${name}`, () => {
      const { peers, dropped } = parsePeerBook(JSON.stringify(book), NOW);
      expect(peers.size).toBe(0);
      expect(dropped.join()).toMatch(reason);
    });

  it('never keeps an address not worth dialling (loopback, link-local, metadata, multicast, names)', () => {
    const { peers } = parsePeerBook(
      JSON.stringify({
        n1: {
          lan: ['127.0.0.1', '169.254.169.254', '::1', 'fe80::1', '224.0.0.1', 'evil.example', 7, '10.0.0.5'],
          port: 20006,
          public: '0.0.0.0',
          seenAt: NOW,
        },
      }),
      NOW,
    );
    expect(peers.get('n1')).toEqual({ lan: ['10.0.0.5'], port: 20006, seenAt: NOW });
  });

  it('survives garbage', () => {
    for (const text of ['', 'null', '[]', '{"n1": null}', '{"n1": {"lan": "x", "port": "1"}}', '\u0000'])
      expect(() => parsePeerBook(text, NOW)).not.toThrow();
    const many = Object.fromEntries(
      Array.from({ length: MAX_PEERS + 5 }, (_, i) => [`n${i}`, { lan: [], port: 1, seenAt: NOW }]),
    );
    expect(parsePeerBook(JSON.stringify(many), NOW).peers.size).toBe(MAX_PEERS);
  });
});

describe('PeerBook', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('remembers what the rendezvous said, survives a restart, and offers LAN then public addresses', async () => {
    dir = await mkdtemp(join(tmpdir(), 'peer-book-'));
    const file = join(dir, 'peers.json');
    const book = await PeerBook.load(file);
    expect(book.size).toBe(0);
    book.remember('node2-1', {
      lan: ['192.168.2.11', '127.0.0.1'],
      port: 20006,
      observed: { ip: '203.0.113.2', port: 40000 },
    });
    await book.close();
    const again = await PeerBook.load(file);
    expect(again.candidates('node2-1')).toEqual({ addresses: ['192.168.2.11', '203.0.113.2'], port: 20006 });
    expect(again.candidates('node9')).toBeUndefined();
    expect(JSON.parse(await readFile(file, 'utf8'))['node2-1'].lan).toEqual(['192.168.2.11']);
  });

  it('a corrupt file is an empty book, not a crash', async () => {
    dir = await mkdtemp(join(tmpdir(), 'peer-book-'));
    const file = join(dir, 'peers.json');
    await writeFile(file, '{"node2-1": {"lan": [');
    expect((await PeerBook.load(file)).size).toBe(0);
  });
});
