import type net from 'node:net';
import { duplexPair } from 'node:stream';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../lib/log.ts';
import { serverMetrics } from './metrics.ts';
import { MAX_PENDING_PER_NODE } from './pending.ts';
import { PUNCH_TIMEOUT_MS } from './punch.ts';
import { type ControlLink, GatewayRegistry } from './registry.ts';
import { Relay } from './relay.ts';
import { Rendezvous } from './rendezvous.ts';

// The wire messages a request produces, with fake control links (no sockets but a probe's).
function setup(maxRelaysPerNode = 0) {
  const registry = new GatewayRegistry();
  const sent = new Map<string, Record<string, unknown>[]>();
  for (const [node, ip] of [
    ['edge-a', '198.51.100.1'],
    ['edge-b', '203.0.113.2'],
  ]) {
    const out: Record<string, unknown>[] = [];
    sent.set(node, out);
    const link: ControlLink = {
      sendControl: (m) => out.push(m),
      close: () => undefined,
      goAway: () => undefined,
    };
    registry.set(node, {
      link,
      info: { lan: ['192.168.1.10'], port: 20008, observed: { ip, port: 40000 } },
      features: [],
    });
  }
  const metrics = serverMetrics(new Registry());
  const relay = new Relay({
    limits: { maxRelaysPerNode, bytesPerSecondPerNode: 0 },
    metrics,
    log: silentLogger,
  });
  const rv = new Rendezvous({ name: 'ts1', registry, relay, metrics });
  const take = (node: string) => (sent.get(node) ?? []).splice(0);
  return { rv, take, metrics, relay };
}

function probeSocket(ip: string, port: number) {
  const ended: string[] = [];
  return {
    socket: {
      remoteAddress: ip,
      remotePort: port,
      end: (s: string) => ended.push(s),
    } as unknown as net.Socket,
    ended,
  };
}

describe('Rendezvous', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('forwards a signal, and refuses a peer that is not registered here', () => {
    const { rv, take } = setup();
    rv.request('edge-a', { t: 'signal', id: 's1', peer: 'edge-b', data: { sdp: 'x' } });
    expect(take('edge-b')).toEqual([{ t: 'signal', id: 's1', peer: 'edge-a', data: { sdp: 'x' } }]);
    rv.request('edge-a', { t: 'connect', id: 'c1', peer: 'edge-z' });
    rv.request('edge-a', { t: 'punch', id: 'p1', peer: 'edge-a' });
    expect(take('edge-a')).toEqual([
      {
        t: 'error',
        id: 'c1',
        code: 'EDGEMESH_ERR_UNAVAILABLE',
        message: 'node edge-z is not registered at ts1',
      },
      {
        t: 'error',
        id: 'p1',
        code: 'EDGEMESH_ERR_UNAVAILABLE',
        message: 'node edge-a is not registered at ts1',
      },
    ]);
  });

  it('connect: each side gets its own token, its TLS role and the other side', () => {
    const { rv, take } = setup();
    rv.request('edge-b', { t: 'connect', id: 'c1', peer: 'edge-a' });
    const [toB] = take('edge-b');
    const [toA] = take('edge-a');
    expect(toB).toMatchObject({
      t: 'relay',
      id: 'c1',
      peer: 'edge-a',
      role: 'server',
      info: { observed: { ip: '198.51.100.1' } },
    });
    expect(toA).toMatchObject({
      t: 'relay',
      id: 'c1',
      peer: 'edge-b',
      role: 'client',
      info: { observed: { ip: '203.0.113.2' } },
    });
    expect(toA.token).not.toBe(toB.token);
  });

  it('punch: probe tokens to both, punch-go with the observed mappings when both probed', () => {
    const { rv, take } = setup();
    rv.request('edge-a', { t: 'punch', id: 'p1', peer: 'edge-b' });
    const [probeA] = take('edge-a');
    const [probeB] = take('edge-b');
    expect(probeA).toMatchObject({ t: 'probe', id: 'p1', peer: 'edge-b' });
    expect(probeB).toMatchObject({ t: 'probe', id: 'p1', peer: 'edge-a' });
    const a = probeSocket('::ffff:198.51.100.1', 41000);
    const b = probeSocket('203.0.113.2', 52000);
    expect(rv.probe(a.socket, probeA.token as string)).toBe(true);
    expect(a.ended).toEqual(['OK 198.51.100.1 41000\n']);
    expect(take('edge-a')).toEqual([]);
    expect(rv.probe(b.socket, probeB.token as string)).toBe(true);
    expect(take('edge-a')).toEqual([
      { t: 'punch-go', id: 'p1', peer: 'edge-b', addr: { ip: '203.0.113.2', port: 52000 }, role: 'client' },
    ]);
    expect(take('edge-b')).toEqual([
      { t: 'punch-go', id: 'p1', peer: 'edge-a', addr: { ip: '198.51.100.1', port: 41000 }, role: 'server' },
    ]);
    expect(rv.probe(b.socket, probeB.token as string)).toBe(false);
  });

  it('punch: the requester hears when the probes did not come in time', () => {
    const { rv, take } = setup();
    rv.request('edge-a', { t: 'punch', id: 'p1', peer: 'edge-b' });
    take('edge-a');
    vi.advanceTimersByTime(PUNCH_TIMEOUT_MS);
    expect(take('edge-a')).toEqual([
      {
        t: 'error',
        id: 'p1',
        code: 'EDGEMESH_ERR_UNAVAILABLE',
        message: 'punch probes did not arrive in time',
      },
    ]);
  });

  it('caps what one node has pending, until its requests time out', async () => {
    const { rv, take, metrics } = setup();
    for (let i = 0; i < MAX_PENDING_PER_NODE; i++)
      rv.request('edge-a', { t: 'punch', id: `p${i}`, peer: 'edge-b' });
    take('edge-a');
    rv.request('edge-a', { t: 'connect', id: 'c1', peer: 'edge-b' });
    expect(take('edge-a')).toEqual([
      { t: 'error', id: 'c1', code: 'EDGEMESH_ERR_UNAVAILABLE', message: 'too many pending requests' },
    ]);
    expect((await metrics.refused.get()).values).toEqual([{ value: 1, labels: { reason: 'pending-limit' } }]);
    vi.advanceTimersByTime(PUNCH_TIMEOUT_MS);
    take('edge-a');
    take('edge-b');
    rv.request('edge-a', { t: 'connect', id: 'c2', peer: 'edge-b' });
    expect(take('edge-a')).toMatchObject([{ t: 'relay', id: 'c2' }]);
  });

  it('connect: legs spliced when both dialled in count against the per-node relay cap', () => {
    const { rv, take, relay } = setup(1);
    rv.request('edge-a', { t: 'connect', id: 'c1', peer: 'edge-b' });
    const [toA] = take('edge-a');
    const [toB] = take('edge-b');
    const leg = () => duplexPair()[0] as unknown as net.Socket;
    expect(relay.arrive(toA.token as string, leg())).toBe(true);
    expect(relay.arrive(toA.token as string, leg())).toBe(false); // one connection per leg
    expect(relay.arrive(toB.token as string, leg())).toBe(true);
    expect(Object.fromEntries(relay.activeByNode)).toEqual({ 'edge-a': 1, 'edge-b': 1 });
    rv.request('edge-b', { t: 'connect', id: 'c2', peer: 'edge-a' });
    expect(take('edge-b')).toEqual([
      {
        t: 'error',
        id: 'c2',
        code: 'EDGEMESH_ERR_UNAVAILABLE',
        message: 'relay limit of 1 per node reached',
      },
    ]);
  });
});
