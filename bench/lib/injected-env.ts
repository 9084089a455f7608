import { DEFAULT_CONFIG } from '../../webhook/config.ts';
import { proxyContainer } from '../../webhook/inject.ts';

/**
 * The environment the webhook injects into the sidecar container (webhook/inject.ts
 * proxyContainer: NODE_OPTIONS from injection.sidecarNodeOptions — a small young generation,
 * an old-space cap, one V8 platform thread — and MALLOC_ARENA_MAX), so benchmarks measure the
 * sidecar as it runs in a pod. Entries taken from the pod (fieldRef, `$(HOST_IP)`) and the log
 * level are left out: the lab passes those as flags.
 */
export const INJECTED_SIDECAR_ENV: Record<string, string> = Object.fromEntries(
  (proxyContainer(DEFAULT_CONFIG).env ?? [])
    .filter((e) => e.value !== undefined && !e.value.includes('$(') && e.name !== 'EDGEMESH_LOG_LEVEL')
    .map((e) => [e.name, e.value as string]),
);
