/**
 * This node's NAT class (birthday-plan.ts NatClass) from STUN: one UDP socket asks every
 * tunnel-server replica that is up which address it sees; different answers mean the NAT maps
 * per destination (hard). Measured when a birthday punch needs it, kept for NAT_CLASS_KEEP_MS
 * (a NAT changes with a router reboot or a new uplink, not by the minute).
 */
import dgram from 'node:dgram';
import type { Address } from '../../lib/tunnel/control.ts';
import { classifyNat, type NatClass } from './birthday-plan.ts';
import type { Clock } from './clock.ts';
import { stunMapped } from './stun-client.ts';

export const NAT_CLASS_KEEP_MS = 300_000;
/** A replica's STUN answer: 1 s (the lab answers in < 1 ms; 4 sends, 250 ms apart). */
export const NAT_STUN_TIMEOUT_MS = 1_000;

export interface NatClassResult {
  nat: NatClass;
  /** The public IP the servers saw (the hard side tells it to the easy one). */
  publicIp: string | undefined;
  at: number;
}

export class NatClassifier {
  readonly #clock: Clock;
  #last: NatClassResult | undefined;
  #running: Promise<NatClassResult> | undefined;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** The class, measured against `servers` (UDP STUN) unless a recent one is known. */
  classify(servers: readonly Address[]): Promise<NatClassResult> {
    const last = this.#last;
    if (last && last.nat !== 'unknown' && this.#clock.now() - last.at < NAT_CLASS_KEEP_MS)
      return Promise.resolve(last);
    this.#running ??= measure(servers)
      .then(({ localPort, mapped }) => {
        const r = { nat: classifyNat(localPort, mapped), publicIp: mapped[0]?.ip, at: this.#clock.now() };
        this.#last = r;
        return r;
      })
      .finally(() => {
        this.#running = undefined;
      });
    return this.#running;
  }

  get last(): NatClassResult | undefined {
    return this.#last;
  }
}

async function measure(servers: readonly Address[]): Promise<{ localPort: number; mapped: Address[] }> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  try {
    await new Promise<void>((resolve) => socket.bind(0, resolve));
    const localPort = socket.address().port;
    const answers = await Promise.allSettled(servers.map((s) => stunMapped(socket, s, NAT_STUN_TIMEOUT_MS)));
    const mapped = answers.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
    return { localPort, mapped };
  } finally {
    socket.close();
  }
}
