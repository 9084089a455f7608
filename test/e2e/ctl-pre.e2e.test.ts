import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlane } from '../cluster/control-plane.ts';
import { EDGEMESH_BIN } from '../harness/netns.ts';

// `edgemesh check --pre` and `edgemesh check` (issue 17 item 2) against a real API server
// before anything is installed: the admin passes every pre-installation check (real
// SelfSubjectAccessReviews, the server's real version), a kubelet's identity is denied what
// installing needs, a namespace holding someone else's things fails, and `check` on the bare
// cluster fails naming what is missing. The whole installed path runs in ctl.e2e.test.ts.
let cp: ControlPlane;

function edgemesh(args: string[], kubeconfig = cp.localKubeconfig) {
  return spawnSync(EDGEMESH_BIN, args, {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, KUBECONFIG: kubeconfig },
  });
}

interface Json {
  ok: boolean;
  checks: { id: string; status: string; message: string; details?: string[] }[];
}
const json = (r: ReturnType<typeof edgemesh>) => JSON.parse(r.stdout) as Json;
const status = (j: Json, id: string) => j.checks.find((c) => c.id === id)?.status;

beforeAll(async () => {
  cp = await ControlPlane.start();
}, 30 * 60_000);

afterAll(async () => {
  await cp?.stop();
});

describe('edgemesh check on a real control plane, nothing installed', () => {
  it('--pre passes for the admin: version, every permission, the namespace free', () => {
    const r = edgemesh(['check', '--pre']);
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^✔ Kubernetes v1\.\d+\.\d+ is 1\.29 or newer/m);
    expect(r.stdout).toContain(
      '✔ can create every kind edgemesh installs and set its config (18 permissions asked)',
    );
    expect(r.stdout).toContain('✔ namespace edgemesh-system does not exist yet');
    expect(r.stdout).toContain('Status check results are ✔');
    const j = json(edgemesh(['check', '--pre', '-o', 'json']));
    expect(j.ok).toBe(true);
    expect(j.checks.map((c) => c.id)).toEqual([
      'kubernetes-api',
      'kubernetes-version',
      'install-rbac',
      'namespace',
    ]);
  });

  it('--pre as a kubelet: denied what installing needs, named one by one', async () => {
    const kubelet = await cp.componentKubeconfig({ node: 'node-a' });
    const r = edgemesh(['check', '--pre', '-o', 'json'], kubelet);
    expect(r.status, r.stderr).toBe(1);
    const rbac = json(r).checks.find((c) => c.id === 'install-rbac');
    expect(rbac?.status).toBe('fail');
    expect(rbac?.details).toContain('denied: create clusterroles.rbac.authorization.k8s.io');
    expect(rbac?.details).toContain(
      'denied: create mutatingwebhookconfigurations.admissionregistration.k8s.io',
    );
    // What `edgemesh config set` (the install's step 3) needs is asked too.
    expect(rbac?.details).toContain('denied: patch daemonsets.apps in edgemesh-system');
  });

  it("--pre fails on a namespace holding someone else's things, passes once it holds edgemesh's", async () => {
    await cp.kubectl(['create', 'namespace', 'edgemesh-system']);
    await cp.kubectl(['-n', 'edgemesh-system', 'create', 'configmap', 'other-app', '--from-literal=a=b']);
    const foreign = edgemesh(['check', '--pre', '-o', 'json']);
    expect(foreign.status).toBe(1);
    const ns = json(foreign).checks.find((c) => c.id === 'namespace');
    expect(ns?.status).toBe('fail');
    expect(ns?.details).toEqual(['configmaps: other-app']);
    await cp.kubectl([
      '-n',
      'edgemesh-system',
      'create',
      'configmap',
      'edgemesh-config',
      '--from-literal=tunnel-servers=',
    ]);
    const ours = edgemesh(['check', '--pre', '-o', 'json']);
    expect(status(json(ours), 'namespace'), ours.stdout).toBe('pass');
  });

  it('check (installed) fails on the bare cluster, naming what is missing', () => {
    const r = edgemesh(['check', '-o', 'json']);
    expect(r.status, r.stderr).toBe(1);
    const j = json(r);
    expect(status(j, 'kubernetes-api')).toBe('pass');
    expect(status(j, 'webhook-config')).toBe('fail');
    expect(status(j, 'webhook-ready')).toBe('fail');
    expect(status(j, 'mesh-ca')).toBe('fail');
    expect(status(j, 'tunnel-servers-ready')).toBe('fail');
    // The ConfigMap made above has an empty tunnel-servers.
    expect(status(j, 'tunnel-servers-setting')).toBe('fail');
    // No webhook configuration: the dry-run pod is admitted and comes back without the proxy.
    expect(j.checks.find((c) => c.id === 'webhook-answers')?.message).toContain(
      'came back without edgemesh-proxy',
    );
  });

  it('status says there is no gateway', () => {
    const r = edgemesh(['status']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe(
      'no gateway pods in edgemesh-system: edgemesh is not installed here, or in another --namespace\n',
    );
  });
});
