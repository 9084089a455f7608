/**
 * bench/udp-flows.ts — memory per UDP flow in sidecar/proxy/udp/flows.ts: heap bytes after
 * 1,000 / 10,000 flows, divided by the count, beside a same-run baseline of the least any
 * flow table can hold (a Map from the same `client|dst` key strings to the endpoint id
 * string). Rounds alternate baseline and candidate; the range over the rounds is printed.
 *
 *   node --expose-gc bench/udp-flows.ts
 */
import { FlowTable, type Route } from '../sidecar/proxy/udp/flows.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('bench/udp-flows.ts needs node --expose-gc');
const ROUNDS = 5;
const SIZES = [1_000, 10_000];

const ENDPOINTS = ['10.1.0.1:53', '10.1.0.2:53', '10.1.0.3:53'];
const ready = new Set(ENDPOINTS);
let turn = 0;
const route: Route = { ready, pick: () => ENDPOINTS[turn++ % ENDPOINTS.length] };

/** Client addresses built fresh each time, as the proxy gets them from each datagram. */
const client = (i: number) => `10.60.${(i >> 8) & 255}.${i & 255}:${40_000 + (i % 20_000)}`;
const DST = '10.96.0.10:53';

function measure(n: number, build: (n: number) => unknown): number {
  gc?.();
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const held = build(n);
  gc?.();
  gc?.();
  const after = process.memoryUsage().heapUsed;
  if (held === undefined) throw new Error('nothing held');
  return (after - before) / n;
}

const baseline = (n: number) => {
  const m = new Map<string, string>();
  for (let i = 0; i < n; i++) m.set(`${client(i)}|${DST}`, ENDPOINTS[i % ENDPOINTS.length]);
  return m;
};
const candidate = (n: number) => {
  const t = new FlowTable({ maxFlows: n });
  for (let i = 0; i < n; i++) t.lookup(client(i), DST, route);
  return t;
};

const range = (xs: number[]) => `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`;
for (const n of SIZES) {
  const base: number[] = [];
  const cand: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    base.push(measure(n, baseline));
    cand.push(measure(n, candidate));
  }
  const ratio = cand.map((c, i) => c / base[i]);
  console.log(
    `${n} flows: FlowTable ${range(cand)} B/flow; baseline Map<key,endpoint> ${range(base)} B/flow; ` +
      `ratio ${Math.min(...ratio).toFixed(2)}–${Math.max(...ratio).toFixed(2)} (${ROUNDS} alternated rounds); ` +
      `per 1,000 flows ≈ ${((Math.max(...cand) * 1000) / 1024).toFixed(0)} KiB`,
  );
}
