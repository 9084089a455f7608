import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';

/**
 * Bounded HTTP load: a closed loop (N requests in flight, as fast as the server answers)
 * or an open loop (a fixed arrival rate, which is what "p99 at 500 requests/s" means).
 * Both stop at `durationMs` or `maxRequests`, whichever comes first.
 */
export interface LoadResult {
  ok: number;
  errors: number;
  elapsedMs: number;
  latenciesMs: number[];
  perSecond: number;
}

type Send = () => Promise<boolean>;

export function requestSender(
  dispatcher: Dispatcher,
  opts: Dispatcher.RequestOptions,
  expectStatus = 200,
): Send {
  return async () => {
    const res = await dispatcher.request(opts);
    await res.body.dump();
    return res.statusCode === expectStatus;
  };
}

export async function closedLoop(
  send: Send,
  concurrency: number,
  durationMs: number,
  maxRequests = 1_000_000,
): Promise<LoadResult> {
  const latenciesMs: number[] = [];
  let ok = 0;
  let errors = 0;
  let started = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  const worker = async () => {
    while (performance.now() < deadline && started < maxRequests) {
      started++;
      const t = performance.now();
      try {
        if (await send()) ok++;
        else errors++;
      } catch {
        errors++;
      }
      latenciesMs.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - start;
  return { ok, errors, elapsedMs, latenciesMs, perSecond: (ok / elapsedMs) * 1000 };
}

export async function openLoop(send: Send, ratePerSecond: number, durationMs: number): Promise<LoadResult> {
  const latenciesMs: number[] = [];
  let ok = 0;
  let errors = 0;
  const total = Math.floor((ratePerSecond * durationMs) / 1000);
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / ratePerSecond;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // Latency counts from the scheduled time, so a stalled client/server shows up (no coordinated omission).
    pending.push(
      send().then(
        (good) => {
          if (good) ok++;
          else errors++;
          latenciesMs.push(performance.now() - due);
        },
        () => {
          errors++;
        },
      ),
    );
  }
  await Promise.all(pending);
  const elapsedMs = performance.now() - start;
  return { ok, errors, elapsedMs, latenciesMs, perSecond: (ok / elapsedMs) * 1000 };
}
