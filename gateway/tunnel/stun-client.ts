/**
 * A STUN Binding client for the tunnel-servers' responder (tunnel-server/stun.ts): the public
 * address a local UDP socket is seen from. Used to classify this node's NAT (nat-type.ts) and
 * to learn the address the easy side of a birthday punch waits behind (birthday.ts).
 *
 * The request carries a SOFTWARE attribute: the responder answers only requests at least as
 * long as its answer (no amplification), 32 bytes.
 */
import { randomBytes } from 'node:crypto';
import type dgram from 'node:dgram';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import type { Address } from '../../lib/tunnel/control.ts';

const MAGIC = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const XOR_MAPPED_ADDRESS = 0x0020;
const SOFTWARE = 0x8022;
const SOFTWARE_VALUE = 'edgemesh'; // 8 bytes: no padding

/** A Binding Request with transaction id `tid` (12 bytes). */
export function bindingRequest(tid: Buffer): Buffer {
  const out = Buffer.alloc(20 + 4 + SOFTWARE_VALUE.length);
  out.writeUInt16BE(BINDING_REQUEST, 0);
  out.writeUInt16BE(4 + SOFTWARE_VALUE.length, 2);
  out.writeUInt32BE(MAGIC, 4);
  tid.copy(out, 8, 0, 12);
  out.writeUInt16BE(SOFTWARE, 20);
  out.writeUInt16BE(SOFTWARE_VALUE.length, 22);
  out.write(SOFTWARE_VALUE, 24, 'latin1');
  return out;
}

/** The IPv4 XOR-MAPPED-ADDRESS of a Binding Success for `tid`; undefined for anything else. */
export function parseBindingResponse(msg: Buffer, tid: Buffer): Address | undefined {
  if (msg.length < 20 || msg.readUInt16BE(0) !== BINDING_SUCCESS || msg.readUInt32BE(4) !== MAGIC)
    return undefined;
  if (!msg.subarray(8, 20).equals(tid.subarray(0, 12))) return undefined;
  const end = Math.min(msg.length, 20 + msg.readUInt16BE(2));
  for (let off = 20; off + 4 <= end; ) {
    const type = msg.readUInt16BE(off);
    const len = msg.readUInt16BE(off + 2);
    if (off + 4 + len > end) return undefined;
    if (type === XOR_MAPPED_ADDRESS && len === 8 && msg[off + 5] === 0x01) {
      const port = msg.readUInt16BE(off + 6) ^ (MAGIC >>> 16);
      const a = (msg.readUInt32BE(off + 8) ^ MAGIC) >>> 0;
      return { ip: [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.'), port };
    }
    off += 4 + len + ((4 - (len % 4)) % 4);
  }
  return undefined;
}

/**
 * Asks `server` (UDP) from `socket` which address it sees; sends again every 250 ms (UDP may
 * lose one), fails after `timeoutMs`. The socket must be bound; other messages pass it by.
 */
export function stunMapped(socket: dgram.Socket, server: Address, timeoutMs = 1_000): Promise<Address> {
  const tid = randomBytes(12);
  const req = bindingRequest(tid);
  return new Promise((resolve, reject) => {
    const send = () => socket.send(req, server.port, server.ip, () => undefined);
    const resend = setInterval(send, 250);
    const timer = setTimeout(() => {
      done();
      reject(
        new EdgemeshError(
          ErrorCodes.UNAVAILABLE,
          `STUN ${server.ip}:${server.port} did not answer in ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    const onMessage = (msg: Buffer) => {
      const mapped = parseBindingResponse(msg, tid);
      if (!mapped) return;
      done();
      resolve(mapped);
    };
    const done = () => {
      clearInterval(resend);
      clearTimeout(timer);
      socket.off('message', onMessage);
    };
    socket.on('message', onMessage);
    send();
  });
}
