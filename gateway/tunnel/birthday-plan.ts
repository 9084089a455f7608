/**
 * Birthday punching, the pure part (birthday.ts runs it): which NATs it is for, who does what,
 * which ports the easy side probes and when, and what may be sent. No sockets, no timers.
 *
 * One side behind an endpoint-dependent ("hard", symmetric: a fresh public port per
 * destination) NAT, the other behind an endpoint-independent ("easy") one. The easy side's
 * public address E is known (STUN); the hard side's public port towards E is not, and a STUN
 * answer does not predict it. So (tailscale's technique, magicsock `endpoint.go`):
 *
 *   hard side: HARD_SOCKETS sockets, each sends to E → the hard NAT opens HARD_SOCKETS random
 *              public ports towards E (packets may die at the easy NAT: not yet solicited);
 *   easy side: from the socket behind E, probes up to MAX_PROBES random ports of the hard
 *              side's public IP → each opens the easy NAT towards that port.
 *
 * A probe that lands on one of the hard side's open ports crosses both NATs (each sees the
 * other's packet as a reply). With k = 256 open ports out of 64,512 and n probes,
 * P(hit) = 1 − (1 − k/64512)^n: 0.63 at 250, 0.86 at 500, 0.98 at 1,000.
 *
 * Both hard: the probes would need k² ≫ 64,512 — not attempted (relay).
 */

/** What a gateway learnt about its NAT's mapping behaviour (nat-type.ts). */
export type NatClass = 'easy' | 'hard' | 'unknown';

/** Sockets (local ports) the hard side opens: tailscale's 256. */
export const HARD_SOCKETS = 256;
/** Probes the easy side sends at most: ~98 % success with HARD_SOCKETS open ports. */
export const MAX_PROBES = 1_000;
/** Between two probes: 1,000 probes in 3 s, ~7 KB/s, well under anything a NAT rate-limits. */
export const PROBE_INTERVAL_MS = 3;
/**
 * The hard side sends from every socket again every second: a probe that came before the hard
 * side's packet opened that port was dropped, but it opened the easy NAT, so the next round
 * from the port it aimed at gets through.
 */
export const HARD_ROUND_MS = 1_000;
/** Rounds of the hard side: HARD_SOCKETS × HARD_ROUNDS packets at most. */
export const HARD_ROUNDS = 5;
/** Everything ends 5 s after the start: sockets closed, the relay stays. */
export const BIRTHDAY_DEADLINE_MS = 5_000;
/** Ports a symmetric NAT picks from (Linux MASQUERADE --random-fully for ports ≥ 1024). */
export const PORT_MIN = 1_024;
export const PORT_MAX = 65_535;

export type BirthdayRole = 'hard' | 'easy';

/**
 * This side's role, or why there is none. Only when exactly one side is hard: both easy needs
 * no birthday (ICE connects), both hard cannot succeed within the budget, unknown is not a guess.
 */
export function birthdayRole(self: NatClass, peer: NatClass): BirthdayRole | { skip: string } {
  if (self === 'unknown' || peer === 'unknown') return { skip: 'NAT type unknown' };
  if (self === 'hard' && peer === 'hard') return { skip: 'both NATs are hard (symmetric)' };
  if (self === 'easy' && peer === 'easy') return { skip: 'both NATs are easy: ICE suffices' };
  return self;
}

/**
 * The NAT's class from the public addresses one local socket was seen from by several
 * servers (STUN): different ports (or IPs) per destination → hard. With one answer only:
 * easy when the port was kept (a port-preserving NAT maps endpoint-independently in
 * practice), else unknown. No answer → unknown.
 */
export function classifyNat(localPort: number, mapped: readonly { ip: string; port: number }[]): NatClass {
  if (mapped.length === 0) return 'unknown';
  const first = mapped[0];
  if (mapped.some((m) => m.ip !== first.ip || m.port !== first.port)) return 'hard';
  if (mapped.length >= 2) return 'easy';
  return first.port === localPort ? 'easy' : 'unknown';
}

/**
 * `count` distinct ports in [PORT_MIN, PORT_MAX], in random order (`random` in [0, 1)).
 * Distinct: a second probe to the same port finds nothing the first did not.
 */
export function probePorts(count: number, random: () => number): number[] {
  const span = PORT_MAX - PORT_MIN + 1;
  const n = Math.min(count, span);
  const picked = new Set<number>();
  // Rejection sampling is fine: n ≤ 1,000 of 64,512, so repeats are rare.
  for (let guard = 0; picked.size < n && guard < n * 20; guard++)
    picked.add(PORT_MIN + Math.min(span - 1, Math.floor(random() * span)));
  return [...picked];
}

/** Probe i (from 0) leaves this many ms after the start; undefined: past the budget. */
export function probeAt(i: number): number | undefined {
  if (i < 0 || i >= MAX_PROBES) return undefined;
  const at = i * PROBE_INTERVAL_MS;
  return at < BIRTHDAY_DEADLINE_MS ? at : undefined;
}

/** The hard side's round r (from 0) leaves this many ms after the start; undefined: done. */
export function hardRoundAt(r: number): number | undefined {
  if (r < 0 || r >= HARD_ROUNDS) return undefined;
  const at = r * HARD_ROUND_MS;
  return at < BIRTHDAY_DEADLINE_MS ? at : undefined;
}

/** The most either side may send in one attempt (packets), checked by the tests. */
export function packetBudget(role: BirthdayRole): number {
  return role === 'hard' ? HARD_SOCKETS * HARD_ROUNDS + 2 * HARD_SOCKETS : MAX_PROBES + ACK_REPEATS;
}

// --- the packets ------------------------------------------------------------------------------
//
//   0        4      5                          21
//   +--------+------+--------------------------+
//   | "EMB1" | kind |  secret (16 B)           |
//   +--------+------+--------------------------+
//
// kind 1 spray/probe (either side's blind packet), 2 reply (the hard side answers a probe from
// the socket it arrived on), 3 chosen (the easy side's pick: that socket and no other carries
// the path). The secret travelled in the `signal` hello (TLS to the tunnel-server and on), so a
// stray packet, or one from anyone who does not see the signalling, is dropped. The path's own
// TLS authenticates the peer afterwards; the secret only keeps strangers from picking the pair.

export const PACKET_MAGIC = 'EMB1';
export const PACKET_LENGTH = 21;
export const SECRET_LENGTH = 16;
/** The easy side sends its `chosen` this often (50 ms apart): a lost one must not cost the path. */
export const ACK_REPEATS = 5;
export const ACK_INTERVAL_MS = 50;

export const PacketKind = { probe: 1, reply: 2, chosen: 3 } as const;
export type PacketKind = (typeof PacketKind)[keyof typeof PacketKind];

export function encodePacket(kind: PacketKind, secret: Buffer): Buffer {
  if (secret.length !== SECRET_LENGTH) throw new RangeError(`birthday secret must be ${SECRET_LENGTH} bytes`);
  const out = Buffer.alloc(PACKET_LENGTH);
  out.write(PACKET_MAGIC, 0, 'latin1');
  out[4] = kind;
  secret.copy(out, 5);
  return out;
}

/** The packet's kind when it is ours with `secret`; undefined for anything else (dropped). */
export function parsePacket(msg: Buffer, secret: Buffer): PacketKind | undefined {
  if (msg.length !== PACKET_LENGTH || msg.toString('latin1', 0, 4) !== PACKET_MAGIC) return undefined;
  const kind = msg[4];
  if (kind !== 1 && kind !== 2 && kind !== 3) return undefined;
  // Not secret-timing sensitive in practice (a wrong guess costs a packet), but cheap to do right.
  let diff = 0;
  for (let i = 0; i < SECRET_LENGTH; i++) diff |= msg[5 + i] ^ secret[i];
  return diff === 0 ? (kind as PacketKind) : undefined;
}
