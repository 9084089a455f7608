import dgram from 'node:dgram';
import type { Logger } from '../lib/log.ts';
import { plainIp } from '../lib/tunnel/control.ts';
import { stunResponse } from './stun.ts';

/**
 * The STUN responder on the UDP port with the same number as the TCP one (stun.ts answers;
 * this is the socket). No state: each request is answered or dropped on its own.
 */
export async function startStun(host: string, port: number, log: Logger): Promise<{ close(): void }> {
  const udp = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  udp.on('message', (msg, rinfo) => {
    const reply = stunResponse(msg, { ip: plainIp(rinfo.address), port: rinfo.port });
    if (reply) udp.send(reply, rinfo.port, rinfo.address);
  });
  udp.on('error', (err) => log.warn({ err: err.message }, 'STUN socket error'));
  await new Promise<void>((resolve) => udp.bind(port, host, () => resolve()));
  return { close: () => udp.close() };
}
