/**
 * net.ipv4.ip_local_reserved_ports keeps ephemeral (source) ports out of a range, so no
 * outgoing connection of the pod can take a port the sidecar must listen on. The setting is
 * per network namespace and also applies to IPv6. Its syntax is the kernel's:
 * "8000,15000-15100" (comma-separated ports and inclusive ranges).
 */
export type PortRange = readonly [number, number];

export function parsePortRanges(text: string): PortRange[] {
  const ranges: PortRange[] = [];
  for (const item of text.split(',').map((s) => s.trim())) {
    if (item === '') continue;
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    const lo = m ? Number(m[1]) : Number.NaN;
    const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
    if (!m || lo < 1 || hi > 65535 || lo > hi) {
      throw new Error(`${JSON.stringify(item)} is not a port or port range (1-65535, "A-B" with A <= B)`);
    }
    ranges.push([lo, hi]);
  }
  return ranges;
}

/** Sorted, with overlapping and adjacent ranges joined. */
export function mergePortRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [lo, hi] of sorted) {
    const last = out.at(-1);
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

export function formatPortRanges(ranges: readonly PortRange[]): string {
  return ranges.map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}-${hi}`)).join(',');
}

/** The existing value with `wanted` added, never dropping what was there. */
export function withReserved(existing: string, wanted: string): string {
  return formatPortRanges(mergePortRanges([...parsePortRanges(existing), ...parsePortRanges(wanted)]));
}

/** Whether every port of `wanted` is already reserved in `existing`. */
export function isReserved(existing: string, wanted: string): boolean {
  const have = mergePortRanges(parsePortRanges(existing));
  return parsePortRanges(wanted).every(([lo, hi]) => have.some(([a, b]) => a <= lo && hi <= b));
}
