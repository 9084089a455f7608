/**
 * Fuzz targets of the datagram lane (gateway/tunnel/lane-probe.ts, lanes.ts): whatever arrives
 * on a lane socket as a probe is refused with a reason, never thrown, and only an exact signed
 * probe opens; whatever a peer sends as a lane offer is taken or refused with a reason, never
 * thrown, and what is taken is only addresses another host can reach.
 */
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, mutateJson } from '../../../test/harness/fuzz.ts';
import { LANE_KEY_BYTES, laneKeys, openProbe, ProbeKind, sealProbe } from '../lane-probe.ts';
import { offeredAddresses } from '../lanes.ts';

/** Fixed key material (not a secret: test only). */
export const LANE_FUZZ_MATERIAL = Buffer.from(Array.from({ length: LANE_KEY_BYTES }, (_, i) => i));
const client = laneKeys(LANE_FUZZ_MATERIAL, 'client');
const server = laneKeys(LANE_FUZZ_MATERIAL, 'server');
const PROBES = [
  sealProbe(server.send, ProbeKind.PROBE, 0),
  sealProbe(server.send, ProbeKind.ANSWER, 1),
  sealProbe(server.send, ProbeKind.PROBE, 2 ** 40 + 5),
  sealProbe(server.send, ProbeKind.ACK, 7, { highest: 2 ** 33, received: 100 }),
];
const VALID = new Set(PROBES.map((b) => b.toString('hex')));

export const probeTarget: FuzzTarget<{ bytes: Buffer }> = {
  name: 'datagram lane probes (gateway/tunnel/lane-probe.ts)',
  input: (rng) => ({
    bytes: mutateBytes(rng, PROBES, [
      { offset: 2, size: 4 },
      { offset: 6, size: 4 },
    ]),
  }),
  parse: ({ bytes }) => openProbe(client.receive, bytes),
  verify({ bytes }, outcome) {
    check(!outcome.error, () => `openProbe threw ${outcome.error?.message}`);
    const opened = outcome.value as ReturnType<typeof openProbe>;
    const exact = VALID.has(bytes.toString('hex'));
    check(opened.ok === exact, () => (exact ? 'a signed probe did not open' : 'a changed probe opened'));
    if (opened.ok)
      check(
        sealProbe(server.send, opened.kind, opened.counter, opened.ack).equals(bytes),
        () => 're-signing changed the bytes',
      );
  },
  expected: () => false, // openProbe documents no throw
};

const OFFERS: readonly Record<string, unknown>[] = [
  {
    t: 'dgram-lane',
    addrs: [
      { ip: '203.0.113.7', port: 40123 },
      { ip: '192.168.1.10', port: 40123 },
    ],
  },
  { t: 'dgram-lane', answer: true, addrs: [{ ip: '198.51.100.20', port: 1024 }] },
  { t: 'dgram-lane', addrs: [] },
];

export const offerTarget: FuzzTarget<string> = {
  name: 'datagram lane offers (gateway/tunnel/lanes.ts offeredAddresses)',
  input: (rng) => mutateJson(rng, rng.pick(OFFERS)),
  parse(json) {
    const m = JSON.parse(json) as unknown;
    // The mux hands on only objects as CONTROL messages.
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return undefined;
    return offeredAddresses(m as Record<string, unknown>);
  },
  verify(_json, { value, error }) {
    check(!error || error instanceof SyntaxError, () => `offeredAddresses threw ${error?.message}`);
    if (value === undefined || 'error' in (value as object)) return;
    const offer = value as { answer: boolean; addrs: { ip: string; port: number }[] };
    check(offer.addrs.length <= 8, () => 'more than 8 addresses taken');
    for (const a of offer.addrs) {
      check(a.port >= 1024 && a.port <= 65535, () => `port ${a.port} taken`);
      check(!/^(127|0|169\.254|22[4-9]|2[3-5]\d)\./.test(a.ip), () => `${a.ip} taken`);
    }
    const again = offeredAddresses(JSON.parse(JSON.stringify({ t: 'dgram-lane', ...offer })));
    check(isDeepStrictEqual(again, offer), () => `round trip changed ${JSON.stringify(offer)}`);
  },
  expected: (err) => err instanceof SyntaxError, // the JSON itself, before the parser
  show: (json) => json,
};
