/**
 * Collecting the young generation while a lookup waits on the gateway.
 *
 * Why: the sidecar runs with a 1 MB semi-space (webhook/config.ts sidecarNodeOptions) and a
 * first query allocates ~40 KB (the answer line, its parse and validated copy, the zone's
 * records), so about one first query in 25 used to meet a scavenge: V8 runs it as a task
 * right after the event that crossed its trigger, that is just after a DNS answer went out,
 * and the pod's next query (first or held) waited for it, ~1 ms under load (docs/scale.md,
 * Round 5). A scavenge's cost is what survives, not when it runs; run while the sidecar is
 * idle anyway — a LOOKUP just written, its answer a gateway round trip away — it overlaps
 * that round trip instead of adding to a later query.
 *
 * Only when the new space is at least half full (`youngGenDue`): earlier would collect more
 * often than V8 does for nothing. Reading the new space's size costs a few µs, paid once per
 * LOOKUP, inside the same wait.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Collect when the new space is at least this full (V8's own scavenge task starts at 0.8). */
export const YOUNG_DUE_FRACTION = 0.5;

/** Pure: whether a new space with `used` of `used + available` bytes is worth collecting now. */
export function youngGenDue(used: number, available: number, fraction = YOUNG_DUE_FRACTION): boolean {
  const capacity = used + available;
  return capacity > 0 && used >= capacity * fraction;
}

let gc: NodeJS.GCFunction | undefined;

/**
 * Runs a scavenge now if the new space is due (see above); returns whether it did. The gc
 * function comes from a fresh context where the flag set here exposes it (as lib/heap.ts).
 */
export function collectYoungIfDue(): boolean {
  let space: { space_used_size: number; space_available_size: number } | undefined;
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'new_space') space = s;
  if (!space || !youngGenDue(space.space_used_size, space.space_available_size)) return false;
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as NodeJS.GCFunction;
  }
  gc({ type: 'minor', execution: 'sync' });
  return true;
}
