/**
 * Test-only: catalogs whose "pods" are loopback addresses (127.0.0.0/8 is all local on
 * Linux), so a gateway under test can dial real servers without leaving the machine.
 */
import net from 'node:net';
import { buildCatalog } from '../lib/catalog/from-objects.ts';
import type { Catalog } from '../lib/catalog/types.ts';

export interface PodSpec {
  name: string;
  ip: string;
  node: string;
  /** Ports listed in the service's EndpointSlice for this pod. */
  ports: number[];
}

/** One service `demo/echo` with an endpoint per pod, plus the pods and nodes. */
export function loopbackCatalog(pods: PodSpec[], revision = 1): Catalog {
  const objects: unknown[] = [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace: 'demo', name: 'echo' },
      spec: { clusterIP: '10.96.0.10', ports: [{ name: 'tcp', port: 7 }] },
    },
  ];
  for (const pod of pods) {
    objects.push(
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          namespace: 'demo',
          name: `echo-${pod.name}`,
          labels: { 'kubernetes.io/service-name': 'echo' },
        },
        addressType: 'IPv4',
        endpoints: [{ addresses: [pod.ip], nodeName: pod.node, targetRef: { kind: 'Pod', name: pod.name } }],
        ports: pod.ports.map((port, i) => ({ name: `p${i}`, port, protocol: 'TCP' })),
      },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { namespace: 'demo', name: pod.name },
        spec: { nodeName: pod.node },
        status: { phase: 'Running', podIP: pod.ip },
      },
    );
  }
  const { catalog } = buildCatalog(objects);
  return { ...catalog, revision };
}

/** An echo server: writes back what it reads and ends when the client ends (half-close). */
export async function echoServer(host: string): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** Sends a header (and optional early bytes), returns the reply line and the socket. */
export function request(
  port: number,
  header: string,
  early?: Buffer,
): Promise<{ reply: string; socket: net.Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl === -1) return;
      socket.off('data', onData);
      socket.pause();
      resolve({ reply: buf.subarray(0, nl).toString(), socket, rest: buf.subarray(nl + 1) });
    };
    socket.on('data', onData);
    socket.on('error', reject);
    socket.on('connect', () => socket.write(early ? Buffer.concat([Buffer.from(header), early]) : header));
    socket.on('end', () => resolve({ reply: buf.toString(), socket, rest: Buffer.alloc(0) }));
  });
}

/** Reads a socket to its end. */
export function readAll(socket: net.Socket, first: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks = [first];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
    socket.resume();
  });
}
