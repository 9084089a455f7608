/**
 * The UDP proxy's decisions in process, against a recording stand-in for the addon (the
 * `addon` test hook): which sockets it asks for, what it sends where, what it drops and
 * counts, and how flows follow catalog changes. The kernel side is sidecar/udp.netns.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog, Endpoint, ServiceEntry } from '../../../lib/catalog/types.ts';
import { createRegistry } from '../../../lib/metrics.ts';
import { createUdpMetrics } from './metrics.ts';
import { type OnBatch, REC_ACTIVE, REC_DATAGRAM, REC_ERROR, type UdpAddon } from './native-udp.ts';
import { UdpProxy } from './proxy.ts';
import { hostOf, UdpRouteTable } from './routes.ts';

const VIP = '10.96.0.50';
const APP = '10.60.0.2:40000';
const APP2 = '10.60.0.2:40001';

const endpoint = (ip: string, nodeName = 'node-a', protocol: 'UDP' | 'TCP' = 'UDP'): Endpoint => ({
  ip,
  ready: true,
  serving: true,
  terminating: false,
  nodeName,
  ports: [{ name: 'dns', port: 5353, protocol }],
});

function entry(
  name: string,
  clusterIPs: string[],
  endpoints: Endpoint[],
  protocol: 'UDP' | 'TCP' = 'UDP',
): ServiceEntry {
  return {
    service: {
      namespace: 'ns',
      name,
      type: 'ClusterIP',
      clusterIPs,
      headless: false,
      ports: [{ name: 'dns', port: 53, protocol }],
      sessionAffinity: { type: 'None' },
      lbPolicy: 'round-robin',
      publishNotReadyAddresses: false,
    },
    endpoints,
  };
}

function catalog(revision: number, services: Record<string, ServiceEntry>): Catalog {
  return { format: 1, revision, clusterDomain: 'cluster.local', services, pods: {}, nodes: {} };
}

/** Records every call; fds count up from 100. */
function fakeAddon() {
  const calls: string[] = [];
  let next = 100;
  let onBatch: OnBatch = () => {};
  let sendErrno = 0;
  const addon: UdpAddon = {
    create(cb) {
      onBatch = cb;
      return {};
    },
    listen: (_e, family, port) => {
      calls.push(`listen ${family} ${port}`);
      return next++;
    },
    replySocket: (_e, addr) => {
      calls.push(`reply ${addr}`);
      return next++;
    },
    upstream: (_e, endpoint, replyFd, client, dst) => {
      const fd = next++;
      calls.push(`upstream ${fd} ${endpoint} reply=${replyFd} ${client} ${dst}`);
      return fd;
    },
    retarget: (_e, fd, endpoint) => {
      calls.push(`retarget ${fd} ${endpoint}`);
    },
    send: (_e, fd, data, offset, length) => {
      calls.push(`send ${fd} ${data.toString('latin1', offset, offset + length)}`);
      return sendErrno;
    },
    close: (_e, fd) => {
      calls.push(`close ${fd}`);
    },
    stats: () => [7, 9, 2],
    stop: () => {
      calls.push('stop');
    },
  };
  return {
    addon,
    calls,
    failSends: (errno: number) => {
      sendErrno = errno;
    },
    /** Datagrams from the app as the addon hands them over: [client, dst, payload]. */
    deliver(...datagrams: [string, string, string][]) {
      const data = Buffer.from(datagrams.map((d) => d[2]).join(''));
      const recs: (number | string | undefined)[] = [];
      let at = 0;
      for (const [client, dst, payload] of datagrams) {
        recs.push(REC_DATAGRAM, 100, at, payload.length, client, dst);
        at += payload.length;
      }
      onBatch(data, recs);
    },
    record(kind: number, fd: number, a = 0) {
      onBatch(Buffer.alloc(0), [kind, fd, a, 0, undefined, undefined]);
    },
  };
}

function setup(services: Record<string, ServiceEntry>) {
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog(1, services) });
  const fake = fakeAddon();
  const registry = createRegistry('test');
  const proxy = new UdpProxy({
    store,
    nodeName: 'node-a',
    families: [4],
    addon: fake.addon,
    metrics: createUdpMetrics(registry),
  });
  proxy.start();
  const metric = async (name: string, label = '') => {
    const line = (await registry.metrics())
      .split('\n')
      .find((l) => l.startsWith(`${name}{`) && l.includes(label));
    return line ? Number(line.split(' ').pop()) : 0;
  };
  return { store, fake, proxy, metric };
}

describe('UdpRouteTable', () => {
  it('routes UDP ports of ClusterIP services by "ip:port", splitting direct and remote endpoints', () => {
    const table = new UdpRouteTable(
      catalog(1, {
        'ns/dns': entry('dns', [VIP, 'fd00:96::50'], [endpoint('10.1.0.1'), endpoint('10.1.0.2', 'node-b')]),
        'ns/tcp': entry('tcp', ['10.96.0.51'], [endpoint('10.1.0.3', 'node-a', 'TCP')], 'TCP'),
      }),
      'node-a',
    );
    const svc = table.resolve(`${VIP}:53`);
    expect(svc?.key).toBe('ns/dns:53');
    expect(svc?.targets.map((t) => t.id)).toEqual(['10.1.0.1:5353', '10.1.0.2:5353']);
    expect(svc?.local.map((t) => t.id)).toEqual(['10.1.0.1:5353']);
    expect([...(svc?.ready ?? [])]).toEqual(['10.1.0.1:5353']);
    expect(table.resolve('[fd00:96::50]:53')).toBe(svc);
    expect(table.resolve('10.96.0.51:53')).toBeUndefined(); // a TCP port is not a UDP route
    expect(table.resolve(`${VIP}:54`)).toBeUndefined();
    expect(table.size).toBe(2);
  });

  it('counts every endpoint as direct when the sidecar has no node name', () => {
    const table = new UdpRouteTable(
      catalog(1, { 'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.2', 'node-b')]) }),
      undefined,
    );
    expect(table.resolve(`${VIP}:53`)?.local.length).toBe(1);
  });

  it('hostOf strips the port and IPv6 brackets', () => {
    expect(hostOf('10.0.0.1:53')).toBe('10.0.0.1');
    expect(hostOf('[fd00::1]:53')).toBe('fd00::1');
  });
});

describe('UdpProxy', () => {
  it('opens one flow per app address with a reply socket bound to the original destination, balanced per flow', () => {
    const { fake } = setup({ 'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.1'), endpoint('10.1.0.2')]) });
    fake.deliver([APP, `${VIP}:53`, 'a'], [APP, `${VIP}:53`, 'b'], [APP2, `${VIP}:53`, 'c']);
    expect(fake.calls).toEqual([
      'listen 4 15006',
      `reply ${VIP}:53`,
      `upstream 102 10.1.0.1:5353 reply=101 ${APP} ${VIP}:53`,
      'send 102 a',
      'send 102 b', // the same flow: no new socket
      `upstream 103 10.1.0.2:5353 reply=101 ${APP2} ${VIP}:53`, // next flow, next endpoint, same reply socket
      'send 103 c',
    ]);
  });

  it('passes a destination that is no service through to itself', () => {
    const { fake, metric } = setup({});
    fake.deliver([APP, '198.51.100.7:123', 'ntp']);
    expect(fake.calls.slice(1)).toEqual([
      'reply 198.51.100.7:123',
      `upstream 102 198.51.100.7:123 reply=101 ${APP} 198.51.100.7:123`,
      'send 102 ntp',
    ]);
    return expect(metric('edgemesh_udp_flows_total', 'route="passthrough"')).resolves.toBe(1);
  });

  it('drops and counts datagrams to services without direct endpoints', async () => {
    const { fake, metric } = setup({
      'ns/remote': entry('remote', [VIP], [endpoint('10.1.0.9', 'node-b')]),
      'ns/empty': entry('empty', ['10.96.0.52'], []),
    });
    fake.deliver([APP, `${VIP}:53`, 'x'], [APP, '10.96.0.52:53', 'y'], [APP2, '10.96.0.52:53', 'z']);
    expect(fake.calls).toEqual(['listen 4 15006']);
    expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="remote-endpoint"')).toBe(1);
    expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="no-endpoint"')).toBe(2);
  });

  it('moves the flows of an endpoint that leaves the ready set when the catalog changes', () => {
    const { fake, store, proxy } = setup({
      'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.1'), endpoint('10.1.0.2')]),
    });
    fake.deliver([APP, `${VIP}:53`, 'a'], [APP2, `${VIP}:53`, 'b']);
    fake.calls.length = 0;
    store.apply({
      type: 'service',
      revision: 2,
      key: 'ns/dns',
      entry: entry('dns', [VIP], [endpoint('10.1.0.2')]),
    });
    expect(fake.calls).toEqual(['retarget 102 10.1.0.2:5353']); // only the flow on 10.1.0.1
    expect(proxy.flows).toBe(2);
    fake.calls.length = 0;
    store.apply({ type: 'service', revision: 3, key: 'ns/dns', entry: entry('dns', [VIP], []) });
    expect(fake.calls.sort()).toEqual(['close 101', 'close 102', 'close 103']); // flows and the reply socket
    expect(proxy.flows).toBe(0);
  });

  it('ends a flow on an ICMP error from its endpoint, and counts failed sends', async () => {
    const { fake, proxy, metric } = setup({ 'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.1')]) });
    fake.deliver([APP, `${VIP}:53`, 'a']);
    fake.record(REC_ACTIVE, 102);
    fake.record(REC_ERROR, 102, 111);
    expect(proxy.flows).toBe(0);
    expect(fake.calls.slice(-2)).toEqual(['close 102', 'close 101']);
    fake.failSends(11);
    fake.deliver([APP, `${VIP}:53`, 'b']);
    // 1 from JS, plus the addon's own failed sends (stats: 2).
    expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="upstream-full"')).toBe(3);
    // Sent: 1 from JS + 7 by the addon; replies: the addon's 9.
    expect(await metric('edgemesh_udp_datagrams_total', 'direction="out"')).toBe(8);
    expect(await metric('edgemesh_udp_datagrams_total', 'direction="reply"')).toBe(9);
  });

  it('close() ends every flow, closes the listener and stops the engine', () => {
    const { fake, proxy } = setup({ 'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.1')]) });
    fake.deliver([APP, `${VIP}:53`, 'a']);
    fake.calls.length = 0;
    proxy.close();
    expect(fake.calls).toEqual(['close 100', 'close 102', 'close 101', 'stop']);
  });
});
