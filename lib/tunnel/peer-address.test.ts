import { describe, expect, it } from 'vitest';
import { dialableLan, lanAddressProblem, registrationProblem, tunnelPortProblem } from './peer-address.ts';

describe('peer LAN addresses', () => {
  it.each([
    ['127.0.0.1', 'a loopback address'],
    ['127.255.0.9', 'a loopback address'],
    ['169.254.169.254', 'a link-local address (169.254.0.0/16, e.g. cloud metadata)'],
    ['0.0.0.0', 'unspecified ("this network", 0.0.0.0/8)'],
    ['224.0.0.251', 'a multicast address'],
    ['255.255.255.255', 'a reserved or broadcast address'],
    ['::', 'unspecified (::)'],
    ['::1', 'the loopback address'],
    ['fe80::1', 'a link-local address (fe80::/10)'],
    ['ff02::1', 'a multicast address'],
    ['::ffff:127.0.0.1', 'a loopback address'],
    ['::ffff:169.254.169.254', 'a link-local address (169.254.0.0/16, e.g. cloud metadata)'],
  ])('refuses %s: %s', (ip, what) => {
    expect(lanAddressProblem(ip)).toBe(`${ip} is ${what}, not reachable from another host`);
  });

  it.each([
    '192.168.1.10',
    '10.0.0.5',
    '172.16.3.4',
    '203.0.113.7',
    'fd00::5',
    '2001:db8::1',
    '::ffff:10.1.2.3',
  ])('accepts %s', (ip) => {
    expect(lanAddressProblem(ip)).toBeUndefined();
  });

  it('refuses what is not an address', () => {
    expect(lanAddressProblem('node-a')).toBe('node-a is not an IP address');
  });
});

describe('tunnel ports', () => {
  it.each([
    [0, 'port 0 is not a TCP port'],
    [22, 'port 22 is privileged (below 1024), not a tunnel port'],
    [10250, 'port 10250 is the kubelet API port, not a tunnel port'],
    [10255, 'port 10255 is the kubelet read-only port, not a tunnel port'],
    [6443, 'port 6443 is the kube-apiserver port, not a tunnel port'],
    [2379, 'port 2379 is the etcd port, not a tunnel port'],
  ])('refuses %d', (port, reason) => {
    expect(tunnelPortProblem(port)).toBe(reason);
  });

  it.each([20006, 1024, 30000, 65535])('accepts %d', (port) => {
    expect(tunnelPortProblem(port)).toBeUndefined();
  });
});

describe('a registration at the tunnel-server', () => {
  it('names the first problem: port, then each address, then the server itself', () => {
    expect(registrationProblem(['192.168.1.10'], 20006, ['198.51.100.1'])).toBeUndefined();
    expect(registrationProblem([], 20006, [])).toBeUndefined();
    expect(registrationProblem(['192.168.1.10'], 10250, [])).toBe(
      'port 10250 is the kubelet API port, not a tunnel port',
    );
    expect(registrationProblem(['192.168.1.10', '169.254.169.254'], 20006, [])).toBe(
      'lan 169.254.169.254 is a link-local address (169.254.0.0/16, e.g. cloud metadata), not reachable from another host',
    );
    expect(registrationProblem(['198.51.100.1'], 20006, ['198.51.100.1'])).toBe(
      "lan 198.51.100.1 is the tunnel-server's own address",
    );
  });
});

describe('LAN candidates a gateway dials', () => {
  const own = {
    addresses: ['192.168.1.2', '198.51.100.1'],
    what: "this gateway's or a tunnel-server's address",
  };

  it('drops the ones no gateway may dial and says why; keeps the rest in order', () => {
    expect(dialableLan(['192.168.1.10', '127.0.0.1', '192.168.1.2', '10.0.0.5'], 20006, own)).toEqual({
      lan: ['192.168.1.10', '10.0.0.5'],
      dropped: [
        '127.0.0.1 is a loopback address, not reachable from another host',
        "192.168.1.2 is this gateway's or a tunnel-server's address",
      ],
    });
  });

  it('drops all of them for a port that is not a tunnel port', () => {
    expect(dialableLan(['192.168.1.10'], 10250, own)).toEqual({
      lan: [],
      dropped: ['port 10250 is the kubelet API port, not a tunnel port'],
    });
    expect(dialableLan([], 10250, own)).toEqual({ lan: [], dropped: [] });
  });
});
