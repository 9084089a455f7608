/**
 * Node (V8) flags the gateway process runs with. The gateway DaemonSet's container command
 * carries this list (node-flags.test.ts keeps the two equal) and the NAT lab starts its
 * gateway nodes with it, so bench/tunnel.ts measures what ships.
 *
 * Why: every socket and TLS read hands JavaScript a fresh ArrayBuffer (16–64 KiB), i.e. a
 * gateway allocates about one byte of them per byte it carries. V8 counts external memory
 * allocated since the last full GC against the old generation's limit, which for a heap of
 * ~10–30 MB leaves little slack: the gateways ran a Mark-Compact every ~20 MB carried, and
 * its marking threads took a quarter of a gateway's CPU on a 2-core node. Those buffers die
 * young, so a scavenge frees them too, if one comes first:
 *   --max-semi-space-size=1  the young generation is scavenged every ~1 MB of JS allocation,
 *                            i.e. every few MB of stream data, before the buffers add up;
 *   --initial-old-space-size=64  the old generation's limit never drops below 64 MB, so what
 *                            piles up between two scavenges does not start a full GC
 *                            (a command-line flag: NODE_OPTIONS refuses it).
 * Measured on the direct path (200 MB transfers, /proc CPU time): Mark-Compacts per 200 MB
 * 7–15 (sending gateway) and 3–7 (receiving) → 0; CPU per GB 1.6–2.6 s → 1.05–1.75 s per
 * gateway. Either flag alone left the sender's full GCs in place.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=1',
  '--initial-old-space-size=64',
];
