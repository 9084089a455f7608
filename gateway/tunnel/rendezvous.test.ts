import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../../lib/log.ts';
import type { ToGateway, ToServer } from '../../lib/tunnel/control.ts';
import type { TlsIdentity } from '../../lib/tunnel/identity.ts';
import { type ControlHandlers, type ControlLink, Rendezvous } from './rendezvous.ts';
import { Requests } from './requests.ts';

// The control side (rendezvous.ts, requests.ts) with fake tunnel-server links: which handler
// each message reaches, how answers settle requests, and which links count as up.

class FakeLink extends EventEmitter<{ message: [msg: ToGateway]; up: [] }> implements ControlLink {
  readonly address: { host: string; port: number };
  serverName: string | undefined;
  up = true;
  observed: { ip: string; port: number } | undefined;
  localPort: number | undefined;
  rttMs: number | undefined;
  identity = {} as TlsIdentity;
  readonly sent: ToServer[] = [];
  started = false;

  constructor(host: string) {
    super();
    this.address = { host, port: 20007 };
  }

  get label(): string {
    return `${this.address.host}:${this.address.port}`;
  }

  send(msg: ToServer): boolean {
    if (!this.up) return false;
    this.sent.push(msg);
    return true;
  }

  start(): void {
    this.started = true;
  }

  waitUp(): Promise<boolean> {
    return Promise.resolve(this.up);
  }

  close(): void {
    this.up = false;
  }
}

const RELAY: ToGateway = {
  t: 'relay',
  id: 'r1',
  peer: 'node-b',
  token: '0'.repeat(32),
  role: 'client',
  info: { lan: ['192.168.2.11'], port: 20006, observed: { ip: '203.0.113.2', port: 40000 } },
};

function setup(links = [new FakeLink('198.51.100.10'), new FakeLink('198.51.100.11')]) {
  const seen: string[] = [];
  const warnings: unknown[] = [];
  const linkUps: string[] = [];
  const record =
    (kind: string) =>
    (link: ControlLink): void => {
      seen.push(`${kind} from ${link.label}`);
    };
  const handlers: ControlHandlers = {
    relay: record('relay'),
    probe: record('probe'),
    'punch-go': record('punch-go'),
    signal: record('signal'),
    'site-peers': record('site-peers'),
  };
  let n = 0;
  const rv = new Rendezvous({
    links,
    handlers,
    onLinkUp: (link) => linkUps.push(link.label),
    log: { ...silentLogger, warn: (obj: unknown) => warnings.push(obj) },
    requests: new Requests(() => `id${++n}`),
  });
  return { rv, links, seen, warnings, linkUps };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Rendezvous dispatch', () => {
  it('hands each message kind to its handler with the link it came on', () => {
    const { links, seen } = setup();
    const messages: ToGateway[] = [
      RELAY,
      { t: 'probe', id: 'p1', peer: 'node-b', token: '1'.repeat(32) },
      { t: 'punch-go', id: 'p1', peer: 'node-b', addr: { ip: '203.0.113.2', port: 40001 }, role: 'server' },
      { t: 'signal', id: 's1', peer: 'node-b', data: { type: 'offer', sdp: 'v=0' } },
      { t: 'site-peers', peers: [{ node: 'node-c', lan: ['192.168.1.12'], port: 20006 }] },
      { t: 'registered', server: 'ts-0', observed: { ip: '203.0.113.1', port: 1 } },
    ];
    for (const m of messages) links[1].emit('message', m);
    expect(seen).toEqual([
      'relay from 198.51.100.11:20007',
      'probe from 198.51.100.11:20007',
      'punch-go from 198.51.100.11:20007',
      'signal from 198.51.100.11:20007',
      'site-peers from 198.51.100.11:20007',
    ]);
  });

  it('an error for no request of ours is a warning naming the server', () => {
    const { links, warnings } = setup();
    links[0].emit('message', {
      t: 'error',
      code: 'EDGEMESH_ERR_UNAVAILABLE',
      message: 'peer not registered',
    });
    expect(warnings).toEqual([{ server: '198.51.100.10:20007', reason: 'peer not registered' }]);
  });

  it('tells when a link comes up (peers on the relay search again: peer.ts linkUp)', () => {
    const { rv, links, linkUps } = setup();
    rv.start();
    expect(links.every((l) => l.started)).toBe(true);
    links[1].emit('up');
    expect(linkUps).toEqual(['198.51.100.11:20007']);
  });

  it('lists links that are up from the preferred one on, and their status', () => {
    const links = ['198.51.100.10', '198.51.100.11', '198.51.100.12'].map((h) => new FakeLink(h));
    const { rv } = setup(links);
    links[1].up = false;
    links[2].serverName = 'ts-2';
    links[2].observed = { ip: '203.0.113.1', port: 41000 };
    links[2].localPort = 40000;
    expect(rv.linksUp(2).map((l) => l.label)).toEqual(['198.51.100.12:20007', '198.51.100.10:20007']);
    expect(rv.status()).toEqual([
      { address: '198.51.100.10:20007', name: undefined, up: true, observed: undefined },
      { address: '198.51.100.11:20007', name: undefined, up: false, observed: undefined },
      {
        address: '198.51.100.12:20007',
        name: 'ts-2',
        up: true,
        observed: '203.0.113.1:41000',
        localPort: 40000,
      },
    ]);
  });
});

describe('requests and their answers', () => {
  it('an answer settles the request once the work it started is done', async () => {
    const { rv, links } = setup();
    const asked = rv.request(links[0], { t: 'connect', peer: 'node-b' }, 5000);
    expect(links[0].sent).toEqual([{ t: 'connect', peer: 'node-b', id: 'id1' }]);
    let joined = (): void => undefined;
    const work = new Promise<void>((resolve) => {
      joined = resolve;
    });
    expect(rv.answer({ ...RELAY, id: 'id1' }, work)).toBe(true);
    let settled = false;
    void asked.then(() => {
      settled = true;
    });
    await Promise.resolve();
    expect(settled).toBe(false);
    joined();
    await expect(asked).resolves.toMatchObject({ t: 'relay', id: 'id1' });
  });

  it('fails with the work, and an answer nobody waits for says so', async () => {
    const { rv, links } = setup();
    const asked = rv.request(links[0], { t: 'punch', peer: 'node-b' }, 6000);
    expect(rv.answer({ ...RELAY, id: 'id1' }, Promise.reject(new Error('TLS handshake failed')))).toBe(true);
    await expect(asked).rejects.toThrow('TLS handshake failed');
    expect(rv.answer({ ...RELAY, id: 'id1' }, Promise.resolve())).toBe(false); // the peer's own
  });

  it("an error with the request's id fails it with the server's reason", async () => {
    const { rv, links, warnings } = setup();
    const asked = rv.request(links[0], { t: 'punch', peer: 'node-b' }, 6000);
    links[0].emit('message', {
      t: 'error',
      id: 'id1',
      code: 'EDGEMESH_ERR_UNAVAILABLE',
      message: 'punch probes did not arrive in time',
    });
    await expect(asked).rejects.toThrow('198.51.100.10:20007: punch probes did not arrive in time');
    expect(warnings).toEqual([]);
  });

  it('a link that is down fails at once; a server that does not answer fails at the timeout', async () => {
    vi.useFakeTimers();
    const { rv, links } = setup();
    links[1].up = false;
    await expect(rv.request(links[1], { t: 'connect', peer: 'node-b' }, 5000)).rejects.toThrow(
      '198.51.100.11:20007 is down',
    );
    const asked = rv.request(links[0], { t: 'connect', peer: 'node-b' }, 5000);
    const failed = expect(asked).rejects.toThrow('198.51.100.10:20007 did not answer connect in 5000 ms');
    vi.advanceTimersByTime(5000);
    await failed;
    // A late answer finds nobody waiting.
    expect(rv.answer({ ...RELAY, id: 'id2' }, Promise.resolve())).toBe(false);
  });
});
