import { isIP } from 'node:net';
import { FrameError } from './frame.ts';
import { assertName } from './identity.ts';

/**
 * Control messages between a gateway and a tunnel-server: CONTROL frames (one JSON object
 * each) on the gateway's mutually authenticated TLS connection. The node a message comes
 * from is the certificate's, never a field. Every message is validated here; an invalid one
 * is a protocol error that closes that control session only.
 *
 *   gateway → server
 *     register  { lan: [ip], port }       announce LAN addresses and tunnel port
 *     connect   { id, peer }              relay me to `peer` (and tell us each other's addresses)
 *     punch     { id, peer }              coordinate a TCP hole punch with `peer`
 *     signal    { id, peer, data }        pass ICE/SDP data to `peer` (UDP path)
 *   server → gateway
 *     registered { server, observed }     the address the server sees this connection from
 *     relay      { id, peer, token, role, info }   dial RAW RELAY <token>; TLS role for the pair
 *     probe      { id, peer, token }      dial RAW PROBE <token> from a fresh local port
 *     punch-go   { id, peer, addr, role } connect from that port to addr now (simultaneous open)
 *     signal     { id, peer, data }       ICE/SDP data from `peer`
 *     error      { id?, code, message }
 *
 * A raw connection (relay leg or probe) to the same port starts with one ASCII line instead
 * of a TLS ClientHello:  "EMT1 RELAY <token>\n"  or  "EMT1 PROBE <token>\n"  (token: 32 hex).
 * A probe is answered "OK <ip> <port>\n" (the observed address) and closed; relay legs are
 * spliced once both have arrived. Tokens are single-use secrets issued over the TLS control
 * connection; the relayed bytes are the gateways' own end-to-end TLS.
 */
export interface Address {
  ip: string;
  port: number;
}

export interface PeerInfo {
  lan: string[];
  port: number;
  observed: Address;
}

export type TlsRole = 'client' | 'server';

export type ToServer =
  /** `features`: messages this gateway understands beyond the first protocol (older: none). */
  | { t: 'register'; lan: string[]; port: number; features?: Feature[] }
  | { t: 'connect'; id: string; peer: string }
  | { t: 'punch'; id: string; peer: string }
  | { t: 'signal'; id: string; peer: string; data: Record<string, unknown> };

export type ToGateway =
  | { t: 'registered'; server: string; observed: Address }
  | { t: 'relay'; id: string; peer: string; token: string; role: TlsRole; info: PeerInfo }
  | { t: 'probe'; id: string; peer: string; token: string }
  | { t: 'punch-go'; id: string; peer: string; addr: Address; role: TlsRole }
  | { t: 'signal'; id: string; peer: string; data: Record<string, unknown> }
  /**
   * Gateways behind the same public address as the receiver (its site, as the tunnel-server
   * sees it), with their LAN addresses: so that same-site peers find each other on the LAN
   * even when the cloud is gone later, before they ever needed each other.
   */
  | { t: 'site-peers'; peers: SitePeer[] }
  | { t: 'error'; id?: string; code: string; message: string };

export interface SitePeer {
  node: string;
  lan: string[];
  port: number;
}

/**
 * What a gateway may declare it understands. A server sends a newer message only to gateways
 * that declared it: an older gateway closes its link on a message it cannot parse.
 */
export const FEATURES = ['site-peers'] as const;
export type Feature = (typeof FEATURES)[number];

/** Site peers in one message at most (more are sent in several). */
export const MAX_SITE_PEERS = 32;

export const RAW_MAGIC = 'EMT1';
export const RAW_LINE_MAX = 64;
const TOKEN = /^[0-9a-f]{32}$/;
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_SIGNAL = 16 * 1024;

function str(m: Record<string, unknown>, key: string, re?: RegExp): string {
  const v = m[key];
  if (typeof v !== 'string' || (re && !re.test(v)))
    throw new FrameError(`control ${String(m.t)}: bad ${key}`);
  return v;
}

function nodeName(m: Record<string, unknown>, key: string): string {
  const v = str(m, key);
  try {
    assertName(v);
  } catch {
    throw new FrameError(`control ${String(m.t)}: ${key} is not a node name`);
  }
  return v;
}

function port(m: Record<string, unknown>, key: string): number {
  const v = m[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535)
    throw new FrameError(`control ${String(m.t)}: bad ${key}`);
  return v;
}

function address(m: Record<string, unknown>, key: string): Address {
  const v = m[key];
  if (typeof v !== 'object' || v === null) throw new FrameError(`control ${String(m.t)}: bad ${key}`);
  const a = v as Record<string, unknown>;
  if (typeof a.ip !== 'string' || isIP(a.ip) === 0)
    throw new FrameError(`control ${String(m.t)}: bad ${key}.ip`);
  return { ip: a.ip, port: port(a, 'port') };
}

function ipList(m: Record<string, unknown>, key: string): string[] {
  const v = m[key];
  if (!Array.isArray(v) || v.length > 16 || !v.every((ip) => typeof ip === 'string' && isIP(ip) !== 0))
    throw new FrameError(`control ${String(m.t)}: ${key} must be up to 16 IP addresses`);
  return v as string[];
}

function signalData(m: Record<string, unknown>): Record<string, unknown> {
  const d = m.data;
  if (typeof d !== 'object' || d === null || Array.isArray(d) || JSON.stringify(d).length > MAX_SIGNAL)
    throw new FrameError('control signal: data must be an object under 16 KiB');
  return d as Record<string, unknown>;
}

function role(m: Record<string, unknown>): TlsRole {
  const r = m.role;
  if (r !== 'client' && r !== 'server') throw new FrameError(`control ${String(m.t)}: bad role`);
  return r;
}

export function parseToServer(m: Record<string, unknown>): ToServer {
  switch (m.t) {
    case 'register':
      return {
        t: 'register',
        lan: ipList(m, 'lan'),
        port: port(m, 'port'),
        // Unknown features are ignored: a newer gateway may know more than this server.
        ...(Array.isArray(m.features)
          ? { features: FEATURES.filter((f) => (m.features as unknown[]).includes(f)) }
          : {}),
      };
    case 'connect':
    case 'punch':
      return { t: m.t, id: str(m, 'id', ID), peer: nodeName(m, 'peer') };
    case 'signal':
      return { t: 'signal', id: str(m, 'id', ID), peer: nodeName(m, 'peer'), data: signalData(m) };
    default:
      throw new FrameError(`unknown control message ${JSON.stringify(m.t)}`);
  }
}

export function parseToGateway(m: Record<string, unknown>): ToGateway {
  switch (m.t) {
    case 'registered':
      return { t: 'registered', server: str(m, 'server'), observed: address(m, 'observed') };
    case 'relay': {
      const info = m.info as Record<string, unknown> | undefined;
      if (typeof info !== 'object' || info === null) throw new FrameError('control relay: bad info');
      return {
        t: 'relay',
        id: str(m, 'id', ID),
        peer: nodeName(m, 'peer'),
        token: str(m, 'token', TOKEN),
        role: role(m),
        info: { lan: ipList(info, 'lan'), port: port(info, 'port'), observed: address(info, 'observed') },
      };
    }
    case 'probe':
      return { t: 'probe', id: str(m, 'id', ID), peer: nodeName(m, 'peer'), token: str(m, 'token', TOKEN) };
    case 'punch-go':
      return {
        t: 'punch-go',
        id: str(m, 'id', ID),
        peer: nodeName(m, 'peer'),
        addr: address(m, 'addr'),
        role: role(m),
      };
    case 'signal':
      return { t: 'signal', id: str(m, 'id', ID), peer: nodeName(m, 'peer'), data: signalData(m) };
    case 'site-peers': {
      const list = m.peers;
      if (!Array.isArray(list) || list.length > MAX_SITE_PEERS)
        throw new FrameError(`control site-peers: peers must be a list of at most ${MAX_SITE_PEERS}`);
      const peers = list.map((p) => {
        if (typeof p !== 'object' || p === null) throw new FrameError('control site-peers: bad peer');
        const r = p as Record<string, unknown>;
        return { node: nodeName(r, 'node'), lan: ipList(r, 'lan'), port: port(r, 'port') };
      });
      return { t: 'site-peers', peers };
    }
    case 'error':
      return {
        t: 'error',
        ...(m.id === undefined ? {} : { id: str(m, 'id', ID) }),
        code: str(m, 'code'),
        message: str(m, 'message'),
      };
    default:
      throw new FrameError(`unknown control message ${JSON.stringify(m.t)}`);
  }
}

/**
 * Birthday punching (gateway/tunnel/birthday.ts) travels inside `signal` data, which the
 * tunnel-server forwards as is (older servers too): `{type: "birthday", step: "hello", ...}`
 * from each gateway to the other, with the sender's NAT class and the secret both put in
 * their probe packets. An easy side names the address its probe socket is seen from (`addr`),
 * a hard side its public IP (`ip`); `step: "bye"` ends an attempt early (`reason`). The
 * receiving gateway validates it here; anything else in a birthday signal is dropped.
 */
export type BirthdaySignal =
  | {
      type: 'birthday';
      step: 'hello';
      nat: 'easy' | 'hard' | 'unknown';
      secret: string;
      addr?: Address;
      ip?: string;
    }
  | { type: 'birthday'; step: 'bye'; reason: string };

const NAT_CLASSES = ['easy', 'hard', 'unknown'] as const;

export function parseBirthdaySignal(d: Record<string, unknown>): BirthdaySignal {
  const m = { ...d, t: 'birthday' };
  if (d.type !== 'birthday') throw new FrameError('control birthday: bad type');
  if (d.step === 'bye') {
    const reason = str(m, 'reason');
    if (reason.length > 256) throw new FrameError('control birthday: reason over 256 characters');
    return { type: 'birthday', step: 'bye', reason };
  }
  if (d.step !== 'hello') throw new FrameError('control birthday: bad step');
  const nat = NAT_CLASSES.find((c) => c === d.nat);
  if (!nat) throw new FrameError('control birthday: bad nat');
  const secret = str(m, 'secret', TOKEN);
  if (nat === 'easy') return { type: 'birthday', step: 'hello', nat, secret, addr: address(m, 'addr') };
  if (nat === 'hard') {
    const ip = str(m, 'ip');
    if (isIP(ip) !== 4) throw new FrameError('control birthday: ip must be an IPv4 address');
    return { type: 'birthday', step: 'hello', nat, secret, ip };
  }
  return { type: 'birthday', step: 'hello', nat, secret };
}

/** "EMT1 RELAY <token>" / "EMT1 PROBE <token>" (without the newline). */
export function parseRawLine(line: string): { kind: 'RELAY' | 'PROBE'; token: string } {
  const m = /^EMT1 (RELAY|PROBE) ([0-9a-f]{32})$/.exec(line);
  if (!m) throw new FrameError('raw connection: expected "EMT1 RELAY|PROBE <token>"');
  return { kind: m[1] as 'RELAY' | 'PROBE', token: m[2] };
}

/** The TLS role of `self` toward `peer`: the smaller node name is the TLS client. */
export function tlsRole(self: string, peer: string): TlsRole {
  return self < peer ? 'client' : 'server';
}

/** Strips the IPv4-mapped prefix Node reports on dual-stack sockets. */
export function plainIp(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
}
