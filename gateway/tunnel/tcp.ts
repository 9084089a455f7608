import net from 'node:net';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Address } from '../../lib/tunnel/control.ts';
import { RAW_LINE_MAX } from '../../lib/tunnel/control.ts';

/**
 * Raw TCP legs of the tunnel: relay legs and punch probes to a tunnel-server, and TCP
 * simultaneous open between two gateways.
 */

/** Connects, resolving on 'connect'; `localPort` binds first (libuv sets SO_REUSEADDR). */
export function dial(addr: Address, opts: { localPort?: number; timeoutMs: number }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: addr.ip,
      port: addr.port,
      ...(opts.localPort ? { localPort: opts.localPort, localAddress: '0.0.0.0' } : {}),
      allowHalfOpen: true,
      noDelay: true,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, `connect ${addr.ip}:${addr.port} timed out`));
    }, opts.timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** A relay leg: the raw line, then the socket is the byte stream to the peer. */
export async function dialRelay(server: Address, token: string, timeoutMs = 5000): Promise<net.Socket> {
  const socket = await dial(server, { timeoutMs });
  socket.write(`EMT1 RELAY ${token}\n`);
  return socket;
}

/**
 * A punch probe from a fresh local port: the server answers the address it sees, which
 * for a port-preserving NAT is our public address with the same port.
 */
export async function probe(
  server: Address,
  token: string,
  timeoutMs = 3000,
): Promise<{ localPort: number; observed: Address }> {
  const socket = await dial(server, { timeoutMs });
  const localPort = socket.localPort ?? 0;
  socket.write(`EMT1 PROBE ${token}\n`);
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'probe not answered'));
    }, timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (s: string) => {
      buf += s;
      if (buf.length > RAW_LINE_MAX) socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      // The server closes first, so its side (not ours) holds TIME_WAIT and the port is free.
      const m = /^OK (\S+) (\d+)\n$/.exec(buf);
      if (!m) reject(new EdgemeshError(ErrorCodes.UNAVAILABLE, 'bad probe answer'));
      else resolve({ localPort, observed: { ip: m[1], port: Number(m[2]) } });
    });
    socket.on('end', () => socket.end());
  });
}

/**
 * TCP simultaneous open: both gateways connect to each other's observed address from the
 * port their probe used, at about the same time. Behind NAT routers that drop unsolicited
 * SYNs, the first SYN out opens the local mapping and the peer's SYN then crosses it.
 * Retries (same port) until `deadlineMs`; each attempt lasts up to 1.5 s so the kernel's
 * 1 s SYN retransmit is part of it.
 */
export async function simultaneousOpen(
  localPort: number,
  peer: Address,
  deadlineMs: number,
): Promise<net.Socket> {
  const end = Date.now() + deadlineMs;
  let lastErr: unknown;
  while (Date.now() < end) {
    try {
      return await dial(peer, { localPort, timeoutMs: Math.min(1500, Math.max(100, end - Date.now())) });
    } catch (err) {
      lastErr = err;
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 30));
    }
  }
  throw new EdgemeshError(
    ErrorCodes.UNAVAILABLE,
    `TCP punch to ${peer.ip}:${peer.port} failed: ${String((lastErr as Error)?.message ?? lastErr)}`,
  );
}
