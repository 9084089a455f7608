import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, describe, expect, it } from 'vitest';
import { GoldenDir } from '../harness/golden.ts';
import { type ContainerRecord, type PodRecord, podStatus } from './pod-status.ts';

const golden = new GoldenDir(new URL('./testdata', import.meta.url).pathname);
const NOW = '2026-01-02T03:04:05Z';
const T0 = '2026-01-02T03:00:00Z';

const pod = (restartPolicy = 'Always'): V1Pod => ({
  metadata: { name: 'web-1', namespace: 'demo', uid: '0123abcd-0000-4000-8000-000000000000' },
  spec: {
    restartPolicy,
    initContainers: [
      { name: 'edgemesh-init', image: 'edgemesh:0.1.0' },
      { name: 'edgemesh-proxy', image: 'edgemesh:0.1.0', restartPolicy: 'Always' },
    ],
    containers: [{ name: 'nginx', image: 'nginx:1.27' }],
  },
});

const running = { kind: 'running', startedAt: T0 } as const;
const exited = (exitCode: number) =>
  ({
    kind: 'terminated',
    exitCode,
    reason: exitCode === 0 ? 'Completed' : 'Error',
    startedAt: T0,
    finishedAt: T0,
  }) as const;
const c = (
  name: string,
  role: ContainerRecord['role'],
  state: ContainerRecord['state'],
  more: Partial<ContainerRecord> = {},
) =>
  ({
    name,
    image: role === 'app' ? 'nginx:1.27' : 'edgemesh:0.1.0',
    role,
    state,
    restartCount: 0,
    started: false,
    ready: false,
    ...more,
  }) as ContainerRecord;
const rec = (containers: ContainerRecord[], more: Partial<PodRecord> = {}): PodRecord => ({
  uid: 'u',
  podIP: '10.244.1.2',
  hostIP: '192.168.50.11',
  startTime: T0,
  sandboxReady: true,
  containers,
  ...more,
});
const waiting = { kind: 'waiting', reason: 'PodInitializing' } as const;

// name → (pod, record, the phase and Ready the kubelet would report)
const cases: Record<string, { pod: V1Pod; record: PodRecord; phase: string; ready: string }> = {
  'sandbox-only': {
    pod: pod(),
    record: rec(
      [
        c('edgemesh-init', 'init', waiting),
        c('edgemesh-proxy', 'sidecar', waiting),
        c('nginx', 'app', waiting),
      ],
      { sandboxReady: false, podIP: '' },
    ),
    phase: 'Pending',
    ready: 'False',
  },
  'init-error': {
    pod: pod(),
    record: rec([
      c('edgemesh-init', 'init', exited(1)),
      c('edgemesh-proxy', 'sidecar', waiting),
      c('nginx', 'app', waiting),
    ]),
    phase: 'Pending',
    ready: 'False',
  },
  'sidecar-starting': {
    pod: pod(),
    record: rec([
      c('edgemesh-init', 'init', exited(0)),
      c('edgemesh-proxy', 'sidecar', running),
      c('nginx', 'app', waiting),
    ]),
    phase: 'Pending',
    ready: 'False',
  },
  'running-ready': {
    pod: pod(),
    record: rec([
      c('edgemesh-init', 'init', exited(0)),
      c('edgemesh-proxy', 'sidecar', running, { started: true, ready: true }),
      c('nginx', 'app', running, { started: true, ready: true }),
    ]),
    phase: 'Running',
    ready: 'True',
  },
  'running-sidecar-unready': {
    pod: pod(),
    record: rec([
      c('edgemesh-init', 'init', exited(0)),
      c('edgemesh-proxy', 'sidecar', running, { started: true, ready: false }),
      c('nginx', 'app', running, { started: true, ready: true }),
    ]),
    phase: 'Running',
    ready: 'False',
  },
  'app-restarting': {
    pod: pod(),
    record: rec([
      c('edgemesh-init', 'init', exited(0)),
      c('edgemesh-proxy', 'sidecar', running, { started: true, ready: true }),
      c(
        'nginx',
        'app',
        { kind: 'waiting', reason: 'CrashLoopBackOff', message: 'back-off 2s restarting nginx' },
        {
          restartCount: 2,
          lastTerminated: { exitCode: 137, reason: 'Error', finishedAt: T0 },
        },
      ),
    ]),
    phase: 'Running',
    ready: 'False',
  },
  'job-succeeded': {
    pod: pod('Never'),
    record: rec([
      c('edgemesh-init', 'init', exited(0)),
      c('edgemesh-proxy', 'sidecar', running, { started: true, ready: true }),
      c('nginx', 'app', exited(0)),
    ]),
    phase: 'Succeeded',
    ready: 'False',
  },
  'init-failed-never': {
    pod: pod('Never'),
    record: rec(
      [
        c('edgemesh-init', 'init', exited(2)),
        c('edgemesh-proxy', 'sidecar', waiting),
        c('nginx', 'app', waiting),
      ],
      {
        failed: { reason: 'InitContainerFailed', message: 'init container edgemesh-init exited 2' },
      },
    ),
    phase: 'Failed',
    ready: 'False',
  },
};

describe('podStatus', () => {
  for (const [name, tc] of Object.entries(cases)) {
    it(name, () => {
      const status = podStatus(tc.pod, tc.record, NOW);
      expect(status.phase).toBe(tc.phase);
      expect(status.conditions?.find((x) => x.type === 'Ready')?.status).toBe(tc.ready);
      golden.expect(`${name}.status.golden`, `${JSON.stringify(status, null, 2)}\n`);
    });
  }

  it('keeps a condition transition time while its status is unchanged', () => {
    const before = {
      ...pod(),
      status: {
        conditions: [{ type: 'Initialized', status: 'True', lastTransitionTime: T0 as unknown as Date }],
      },
    };
    const record = cases['running-ready']?.record as PodRecord;
    const status = podStatus(before, record, NOW);
    expect(status.conditions?.find((x) => x.type === 'Initialized')?.lastTransitionTime).toBe(T0);
    expect(status.conditions?.find((x) => x.type === 'Ready')?.lastTransitionTime).toBe(NOW);
  });

  afterAll(() => {
    expect(golden.unused('.status.golden')).toEqual([]);
  });
});
