/**
 * The UDP proxy's decisions in process, against a recording stand-in for the addon (the
 * `addon` test hook): which sockets it asks for, what it sends where, what it drops and
 * counts, and how flows follow catalog changes. The kernel side is sidecar/udp.netns.test.ts.
 */
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CatalogStore } from '../../../lib/catalog/store.ts';
import type { Catalog, Endpoint, ServiceEntry } from '../../../lib/catalog/types.ts';
import { createRegistry } from '../../../lib/metrics.ts';
import { DatagramDecoder, encodeDatagram } from '../../../lib/tunnel/frame.ts';
import { DEFAULT_IDLE_MS } from './flows.ts';
import { createUdpMetrics } from './metrics.ts';
import {
  type OnBatch,
  REC_ACTIVE,
  REC_CLOSED,
  REC_DATAGRAM,
  REC_ERROR,
  type UdpAddon,
} from './native-udp.ts';
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

/** The framed datagrams of a buffer, as text joined by ','. */
const unframe = (b: Buffer) => [...new DatagramDecoder().push(b)].map((d) => d.toString()).join(',');

/**
 * Records every call; fds count up from 100. `carries`: a build with gatewayFlow (it takes
 * gateway connections over), else one from before it (JS carries them).
 */
function fakeAddon({ carries = false } = {}) {
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
    sendTo: (_e, fd, client, data, offset, length) => {
      calls.push(`sendTo ${fd} ${client} ${data.toString('latin1', offset, offset + length)}`);
      return 0;
    },
    close: (_e, fd) => {
      calls.push(`close ${fd}`);
    },
    stats: () => (carries ? [7, 9, 2, 3, 4, 5] : [7, 9, 2]),
    stop: () => {
      calls.push('stop');
    },
  };
  if (carries)
    addon.gatewayFlow = (_e, tcpFd, replyFd, client, dst, held, rest) => {
      const fd = next++;
      const socket = typeof tcpFd === 'number' && tcpFd >= 0 ? 'socket' : `bad fd ${tcpFd}`;
      calls.push(
        `gatewayFlow ${fd} ${socket} reply=${replyFd} ${client} ${dst} held=${unframe(held)} rest=${unframe(rest)}`,
      );
      return fd;
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

function setup(
  services: Record<string, ServiceEntry>,
  gateway?: { host: string; port: number },
  { carries = false } = {},
) {
  const store = new CatalogStore();
  store.apply({ type: 'snapshot', catalog: catalog(1, services) });
  const fake = fakeAddon({ carries });
  const registry = createRegistry('test');
  const proxy = new UdpProxy({
    store,
    nodeName: 'node-a',
    families: [4],
    addon: fake.addon,
    metrics: createUdpMetrics(registry),
    gateway,
  });
  proxy.start();
  const metric = async (name: string, label = '') => {
    const line = (await registry.metrics())
      .split('\n')
      .find((l) => l.startsWith(`${name}{`) && l.includes(label));
    return line ? Number(line.split(' ').pop()) : 0;
  };
  /** A series that must be exported: its value, or undefined when it is missing. */
  const series = async (name: string) => {
    const line = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${name}{`));
    return line === undefined ? undefined : Number(line.split(' ').pop());
  };
  return { store, fake, proxy, metric, series };
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
    const { fake, proxy, metric, series } = setup({ 'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.1')]) });
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
    // A build without the stale count (stats() of 3): the series is there, at 0.
    expect(await series('edgemesh_udp_stale_reports_total')).toBe(0);
  });

  it('close() ends every flow, closes the listener and stops the engine', () => {
    const { fake, proxy } = setup({ 'ns/dns': entry('dns', [VIP], [endpoint('10.1.0.1')]) });
    fake.deliver([APP, `${VIP}:53`, 'a']);
    fake.calls.length = 0;
    proxy.close();
    expect(fake.calls).toEqual(['close 100', 'close 102', 'close 101', 'stop']);
  });
});

/** The entry with edgemesh.io/udp-idle-timeout as the catalog carries it (undefined: none). */
function withIdle(e: ServiceEntry, ms: number | undefined): ServiceEntry {
  if (ms !== undefined) e.service.udpIdleTimeoutMs = ms;
  return e;
}

describe('UdpProxy: a changed udp-idle-timeout applies to open flows', () => {
  const VIP2 = '10.96.0.60';
  // The proxy's sweep runs on setInterval and its flow table reads Date.now: both faked.
  afterEach(() => {
    vi.useRealTimers();
  });

  /** ns/dns (fds: reply 101, flow 102) and ns/other (reply 103, flow 104), one flow each at t=0. */
  function twoServices(dnsMs: number | undefined, otherMs: number | undefined) {
    vi.useFakeTimers({ now: 1_000_000 });
    const t = setup({
      'ns/dns': withIdle(entry('dns', [VIP], [endpoint('10.1.0.1')]), dnsMs),
      'ns/other': withIdle(entry('other', [VIP2], [endpoint('10.1.0.2')]), otherMs),
    });
    t.fake.deliver([APP, `${VIP}:53`, 'a'], [APP, `${VIP2}:53`, 'b']);
    expect(t.proxy.flows).toBe(2);
    const setDns = (revision: number, ms: number | undefined) =>
      t.store.apply({
        type: 'service',
        revision,
        key: 'ns/dns',
        entry: withIdle(entry('dns', [VIP], [endpoint('10.1.0.1')]), ms),
      });
    const closed = (fd: number) => t.fake.calls.includes(`close ${fd}`);
    return { ...t, setDns, closed };
  }

  it("shortened: a flow idle longer than the new timeout ends at the next sweep; another Service's flow is kept", () => {
    const { proxy, setDns, closed } = twoServices(60_000, 60_000);
    vi.advanceTimersByTime(20_000); // both idle 20 s
    setDns(2, 10_000);
    expect(closed(102)).toBe(false); // not at the update: at the sweep
    vi.advanceTimersByTime(1_000);
    expect(closed(102)).toBe(true);
    expect(closed(104)).toBe(false); // ns/other keeps its 60 s
    expect(proxy.flows).toBe(1);
    vi.advanceTimersByTime(40_000); // idle 61 s: its own timeout
    expect(closed(104)).toBe(true);
  });

  it('lengthened: a flow is kept past the timeout it was opened with', () => {
    const { proxy, setDns, closed } = twoServices(10_000, 10_000);
    vi.advanceTimersByTime(5_000);
    setDns(2, 60_000);
    vi.advanceTimersByTime(25_000); // idle 30 s
    expect(closed(104)).toBe(true); // ns/other: its 10 s
    expect(closed(102)).toBe(false);
    expect(proxy.flows).toBe(1);
    vi.advanceTimersByTime(31_000); // idle 61 s
    expect(closed(102)).toBe(true);
  });

  it("removed: the flow falls back to the proxy's default idle timeout", () => {
    const { proxy, setDns, closed } = twoServices(120_000, 120_000);
    setDns(2, undefined);
    vi.advanceTimersByTime(DEFAULT_IDLE_MS + 1_000);
    expect(closed(102)).toBe(true);
    expect(closed(104)).toBe(false);
    expect(proxy.flows).toBe(1);
  });
});

/**
 * A stand-in gateway: answers `OK relay` to a DGRAM request and each framed datagram with
 * `<ip>:<port> got <payload>`; records the request lines. `early`: a framed datagram and
 * half of another sent in the same write as the OK (bytes the sidecar reads with it).
 */
async function fakeGateway({ early = false } = {}) {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let head: Buffer | undefined = Buffer.alloc(0);
    let target = '';
    const decoder = new DatagramDecoder();
    socket.on('data', (chunk: Buffer) => {
      if (head) {
        head = Buffer.concat([head, chunk]);
        const nl = head.indexOf(0x0a);
        if (nl < 0) return;
        const line = head.toString('latin1', 0, nl);
        requests.push(line);
        target = line.split(' ').slice(3).join(':');
        chunk = head.subarray(nl + 1);
        head = undefined;
        const hello = encodeDatagram(Buffer.from('hello'));
        socket.write(
          early ? Buffer.concat([Buffer.from('OK relay\n'), hello, hello.subarray(0, 3)]) : 'OK relay\n',
        );
      }
      for (const d of decoder.push(chunk)) socket.write(encodeDatagram(Buffer.from(`${target} got ${d}`)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: { host: '127.0.0.1', port },
    requests,
    /** Drops every connection (a gateway restart). */
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

const until = async (what: () => boolean) => {
  for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(what()).toBe(true);
};

describe('UdpProxy through the gateway', () => {
  it('carries a flow to an endpoint on another node over a DGRAM connection, replies from the reply socket', async () => {
    const gw = await fakeGateway();
    const { fake, proxy, metric } = setup(
      { 'ns/remote': entry('remote', [VIP], [endpoint('10.1.0.9', 'node-b')]) },
      gw.address,
    );
    try {
      fake.deliver([APP, `${VIP}:53`, 'q1'], [APP, `${VIP}:53`, 'q2']);
      await until(() => fake.calls.filter((c) => c.startsWith('sendTo')).length === 2);
      expect(gw.requests).toEqual(['EDGEMESH/1 DGRAM node-b 10.1.0.9 5353']);
      expect(fake.calls.slice(1)).toEqual([
        `reply ${VIP}:53`, // no upstream socket: the addon does not index the flow
        `sendTo 101 ${APP} 10.1.0.9:5353 got q1`,
        `sendTo 101 ${APP} 10.1.0.9:5353 got q2`,
      ]);
      expect(await metric('edgemesh_udp_flows_total', 'route="gateway"')).toBe(1);
      expect(await metric('edgemesh_udp_datagrams_total', 'direction="out"')).toBe(7 + 2);
      expect(await metric('edgemesh_udp_datagrams_total', 'direction="reply"')).toBe(9 + 2);
      expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="remote-endpoint"')).toBe(0);

      // The gateway restarts: the flow (same app address) continues on a new connection.
      gw.cut();
      await new Promise((r) => setTimeout(r, 50));
      fake.deliver([APP, `${VIP}:53`, 'q3']);
      await until(() => fake.calls.filter((c) => c.startsWith('sendTo')).length === 3);
      expect(fake.calls.at(-1)).toBe(`sendTo 101 ${APP} 10.1.0.9:5353 got q3`);
      expect(gw.requests.length).toBe(2);
      expect(proxy.flows).toBe(1);

      proxy.close();
      expect(fake.calls).toContain('close 101'); // the reply socket, with the last flow
    } finally {
      gw.close();
    }
  });

  it('drops and counts the held datagrams when the gateway cannot be reached', async () => {
    const gw = await fakeGateway();
    gw.close(); // nothing listens on its port now
    const { fake, proxy, metric } = setup(
      { 'ns/remote': entry('remote', [VIP], [endpoint('10.1.0.9', 'node-b')]) },
      gw.address,
    );
    fake.deliver([APP, `${VIP}:53`, 'lost'], [APP, `${VIP}:53`, 'lost too']);
    let dropped = 0;
    await until(() => {
      void metric('edgemesh_udp_datagrams_dropped_total', 'reason="gateway-unavailable"').then((n) => {
        dropped = n;
      });
      return dropped === 2;
    });
    expect(fake.calls.filter((c) => c.startsWith('sendTo'))).toEqual([]);
    proxy.close();
  });

  it('hands the answered connection to an addon that carries gateway flows; a reported close reopens on the next datagram', async () => {
    const gw = await fakeGateway({ early: true });
    const { fake, proxy, metric } = setup(
      { 'ns/remote': entry('remote', [VIP], [endpoint('10.1.0.9', 'node-b')]) },
      gw.address,
      { carries: true },
    );
    try {
      fake.deliver([APP, `${VIP}:53`, 'q1'], [APP, `${VIP}:53`, 'q2']);
      await until(() => fake.calls.some((c) => c.startsWith('gatewayFlow')));
      expect(gw.requests).toEqual(['EDGEMESH/1 DGRAM node-b 10.1.0.9 5353']);
      // The held datagrams and the bytes after the OK (one whole frame, and the first 3
      // bytes of the next one, which the addon keeps) go to the addon; JS sends nothing.
      expect(fake.calls.slice(1)).toEqual([
        `reply ${VIP}:53`,
        `gatewayFlow 102 socket reply=101 ${APP} ${VIP}:53 held=q1,q2 rest=hello`,
      ]);

      // A datagram that reached JS after the hand-over goes to the addon's fd (framed there),
      // activity on that fd keeps the flow, and the addon's drop counts reach /metrics.
      fake.deliver([APP, `${VIP}:53`, 'q3']);
      fake.record(REC_ACTIVE, 102);
      expect(fake.calls.at(-1)).toBe('send 102 q3');
      expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="gateway-full"')).toBe(3);
      expect(await metric('edgemesh_udp_datagrams_dropped_total', 'reason="gateway-unavailable"')).toBe(4);
      // Reports the addon dropped as stale (stats()[5]): the series shows its count.
      expect(await metric('edgemesh_udp_stale_reports_total')).toBe(5);

      // The addon reports the connection ended (e.g. a gateway restart): its fd is closed, the
      // flow stays, and its next datagram opens a new connection handed over the same way.
      fake.record(REC_CLOSED, 102, 0);
      expect(fake.calls.at(-1)).toBe('close 102');
      fake.record(REC_CLOSED, 102, 0); // a stale report: nothing more
      expect(fake.calls.at(-1)).toBe('close 102');
      fake.deliver([APP, `${VIP}:53`, 'q4']);
      await until(() => fake.calls.filter((c) => c.startsWith('gatewayFlow')).length === 2);
      expect(fake.calls.at(-1)).toBe(`gatewayFlow 103 socket reply=101 ${APP} ${VIP}:53 held=q4 rest=hello`);
      expect(gw.requests.length).toBe(2);
      expect(proxy.flows).toBe(1);
      expect(fake.calls.filter((c) => c.startsWith('sendTo'))).toEqual([]);

      fake.calls.length = 0;
      proxy.close();
      expect(fake.calls).toEqual(['close 100', 'close 103', 'close 101', 'stop']);
    } finally {
      gw.close();
    }
  });
});
