/**
 * The original destination of a connection that iptables REDIRECTed to the proxy: the
 * conntrack entry's pre-NAT tuple, read with getsockopt(SO_ORIGINAL_DST) for IPv4 and
 * getsockopt(IP6T_SO_ORIGINAL_DST) for IPv6 (both option number 80, at SOL_IP / SOL_IPV6).
 *
 * Node has no API for it, so we call libc's getsockopt through koffi (prebuilt FFI binaries
 * inside the npm package: nothing is compiled or downloaded at install). The call costs a
 * few µs (bench/proxy.ts prints it); it happens once per accepted connection.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type Koffi from 'koffi';
import { formatIp } from '../../lib/ip.ts';

// koffi (its native addon and JS) loads with the first redirected connection, not at start:
// an idle sidecar does not need it (~0.5 MB private).
let koffi: typeof Koffi | undefined;
const loadKoffi = () => {
  koffi ??= createRequire(import.meta.url)('koffi') as typeof Koffi;
  return koffi;
};

const SOL_IP = 0;
const SOL_IPV6 = 41;
const SO_ORIGINAL_DST = 80; // linux/netfilter_ipv4.h
const IP6T_SO_ORIGINAL_DST = 80; // linux/netfilter_ipv6/ip6_tables.h
const AF_INET = 2;
const AF_INET6 = 10;
const SOCKADDR_IN_LEN = 16;
const SOCKADDR_IN6_LEN = 28;

export interface OriginalDst {
  ip: string;
  port: number;
  family: 4 | 6;
}

type Getsockopt = (fd: number, level: number, name: number, value: Buffer, len: Uint32Array) => number;
let getsockoptFn: Getsockopt | undefined;

function libcGetsockopt(): Getsockopt {
  if (!getsockoptFn) {
    const libc = loadKoffi().load('libc.so.6');
    getsockoptFn = libc.func(
      'int getsockopt(int fd, int level, int optname, _Out_ void *optval, _Inout_ uint32_t *optlen)',
    ) as Getsockopt;
  }
  return getsockoptFn;
}

/** The file descriptor behind a connected net.Socket (Linux: libuv exposes it on the handle). */
export function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}

// One reusable buffer: the call is synchronous, so there is no interleaving.
const value = Buffer.alloc(SOCKADDR_IN6_LEN);
const len = new Uint32Array(1);

/**
 * Reads the original destination of `socket` (an accepted connection). `family` is the
 * family of the socket's local address. Throws with the errno when the kernel has none
 * (e.g. conntrack not loaded: ENOENT).
 */
export function originalDst(
  socket: Socket,
  family: 4 | 6 = socket.localFamily === 'IPv6' ? 6 : 4,
): OriginalDst {
  const fd = socketFd(socket);
  const getsockopt = libcGetsockopt();
  value.fill(0);
  if (family === 4) {
    len[0] = SOCKADDR_IN_LEN;
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, value, len) !== 0) throw errnoError('SO_ORIGINAL_DST');
  } else {
    len[0] = SOCKADDR_IN6_LEN;
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, value, len) !== 0)
      throw errnoError('IP6T_SO_ORIGINAL_DST');
  }
  return decodeSockaddr(value.subarray(0, len[0]));
}

/** Pure: a struct sockaddr_in / sockaddr_in6 (family in host order, port in network order). */
export function decodeSockaddr(buf: Buffer): OriginalDst {
  const af = buf.readUInt16LE(0);
  const port = buf.readUInt16BE(2);
  if (af === AF_INET && buf.length >= SOCKADDR_IN_LEN) {
    return { ip: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port, family: 4 };
  }
  if (af === AF_INET6 && buf.length >= SOCKADDR_IN6_LEN) {
    return { ip: formatIPv6(buf.subarray(8, 24)), port, family: 6 };
  }
  throw new Error(`unexpected sockaddr family ${af} (length ${buf.length})`);
}

/** RFC 5952 text form (lower case, longest zero run compressed), as Node prints addresses. */
export function formatIPv6(b: Uint8Array): string {
  return formatIp(b, { mappedDotted: true });
}

function errnoError(what: string): Error {
  const ffi = loadKoffi();
  const errno = ffi.errno();
  const name = Object.entries(ffi.os.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
  return Object.assign(new Error(`getsockopt(${what}) failed: ${name}`), { errno });
}
