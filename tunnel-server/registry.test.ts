import { describe, expect, it } from 'vitest';
import { MAX_SITE_PEERS } from '../lib/tunnel/control.ts';
import { type ControlLink, GatewayRegistry } from './registry.ts';

function link(): ControlLink & { sent: Record<string, unknown>[] } {
  const sent: Record<string, unknown>[] = [];
  return { sent, sendControl: (m) => sent.push(m), close: () => undefined, goAway: () => undefined };
}
const reg = (ip: string, lan: string, features: string[] = ['site-peers']) => ({
  link: link(),
  info: { lan: [lan], port: 20008, observed: { ip, port: 40000 } },
  features,
});

describe('GatewayRegistry', () => {
  it('keeps one registration per node; only its own link ends it', () => {
    const r = new GatewayRegistry();
    const first = reg('198.51.100.1', '192.168.1.10');
    const second = reg('198.51.100.1', '192.168.1.10');
    r.set('edge-a', first);
    r.set('edge-a', second);
    expect(r.names()).toEqual(['edge-a']);
    expect(r.leave('edge-a', first.link)).toBe(false); // the replaced session closing later
    expect(r.get('edge-a')).toBe(second);
    expect(r.leave('edge-a', second.link)).toBe(true);
    expect(r.size).toBe(0);
  });

  it('sends to registered nodes only', () => {
    const r = new GatewayRegistry();
    const a = reg('198.51.100.1', '192.168.1.10');
    r.set('edge-a', a);
    r.send('edge-a', { t: 'error', code: 'X', message: 'm' });
    r.send('edge-gone', { t: 'error', code: 'X', message: 'm' });
    expect(a.link.sent).toEqual([{ t: 'error', code: 'X', message: 'm' }]);
  });

  it('introduces a new node to the gateways behind the same public address only', () => {
    const r = new GatewayRegistry();
    r.set('edge-a', reg('198.51.100.1', '192.168.1.10'));
    r.set('edge-far', reg('203.0.113.9', '192.168.9.10'));
    r.set('edge-old', reg('198.51.100.1', '192.168.1.11', [])); // predates site-peers
    r.set('edge-b', reg('198.51.100.1', '192.168.1.12'));
    expect(r.siteIntroductions('edge-b')).toEqual([
      {
        to: 'edge-a',
        msg: { t: 'site-peers', peers: [{ node: 'edge-b', lan: ['192.168.1.12'], port: 20008 }] },
      },
      {
        to: 'edge-b',
        msg: {
          t: 'site-peers',
          peers: [
            { node: 'edge-a', lan: ['192.168.1.10'], port: 20008 },
            { node: 'edge-old', lan: ['192.168.1.11'], port: 20008 },
          ],
        },
      },
    ]);
    expect(r.siteIntroductions('edge-unknown')).toEqual([]);
  });

  it('tells a node without site-peers nothing, and splits a large site into messages', () => {
    const r = new GatewayRegistry();
    for (let i = 0; i < MAX_SITE_PEERS + 3; i++)
      r.set(`edge-${i}`, reg('198.51.100.1', `192.168.1.${i + 1}`, []));
    r.set('edge-new', reg('198.51.100.1', '192.168.2.1'));
    const intro = r.siteIntroductions('edge-new');
    expect(intro.map((m) => m.to)).toEqual(['edge-new', 'edge-new']);
    expect(intro.map((m) => (m.msg.t === 'site-peers' ? m.msg.peers.length : -1))).toEqual([
      MAX_SITE_PEERS,
      3,
    ]);
    r.set('edge-plain', reg('198.51.100.1', '192.168.2.2', []));
    expect(r.siteIntroductions('edge-plain').map((m) => m.to)).toEqual(['edge-new']);
  });
});
