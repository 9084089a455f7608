import { describe, expect, it } from 'vitest';
import { CatalogStore } from '../../lib/catalog/store.ts';
import { parseUpstream } from './forwarder.ts';
import { parseResolvConf } from './resolv-conf.ts';
import { startDnsServer } from './server.ts';

describe('resolv.conf and upstream flags', () => {
  it('reads nameservers, the last search line and ndots, as a kubelet writes them', () => {
    const conf = parseResolvConf(
      [
        '# written by the kubelet',
        'search old.example',
        'nameserver 10.96.0.10',
        'nameserver fe80::1%eth0 ; link-local with a zone',
        'nameserver not-an-ip',
        'search default.svc.cluster.local svc.cluster.local cluster.local',
        'options ndots:5 timeout:2',
      ].join('\n'),
    );
    expect(conf).toEqual({
      nameservers: ['10.96.0.10', 'fe80::1'],
      search: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'],
      ndots: 5,
    });
    expect(parseResolvConf('domain corp.example\nnameserver 192.0.2.53').search).toEqual(['corp.example']);
  });

  const upstreams: [string, { host: string; port: number } | RegExp][] = [
    ['10.96.0.10', { host: '10.96.0.10', port: 53 }],
    ['10.96.0.10:5353', { host: '10.96.0.10', port: 5353 }],
    ['fd00::53', { host: 'fd00::53', port: 53 }],
    ['[fd00::53]:5353', { host: 'fd00::53', port: 5353 }],
    ['dns.example', /not IP/],
    ['10.0.0.1:0', /1-65535/],
    ['10.0.0.1:x', /1-65535/],
    ['[::1]:99999', /1-65535/],
  ];
  for (const [text, want] of upstreams) {
    it(`parses --upstream ${text}`, () => {
      if (want instanceof RegExp) expect(() => parseUpstream(text)).toThrow(want);
      else expect(parseUpstream(text)).toEqual(want);
    });
  }

  it('refuses itself as an upstream (a forwarding loop) before opening any socket', async () => {
    await expect(
      startDnsServer({
        store: new CatalogStore(),
        port: 15053,
        upstreams: [parseUpstream('127.0.0.1:15053')],
      }),
    ).rejects.toThrow(/is this DNS server itself/);
  });
});
