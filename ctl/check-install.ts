/**
 * `edgemesh check`: is the installation working? Pure judgements of what check-read.ts read
 * (each input a value, or the Error reading it gave, which fails its check naming the cause):
 *
 *   webhook      the MutatingWebhookConfiguration's caBundle signs the serving certificate in
 *                its Secret, which names the Service and is not near expiry; webhook pods
 *                Ready; a dry-run create of a pod labelled for injection comes back injected
 *                (the API server really called the webhook over TLS and it answered)
 *   mesh CA      the ConfigMap the gateways mount holds a valid certificate, the same as in
 *                the Secret the signer mounts
 *   gateways     a Ready gateway on every node that runs injected pods (/ready tells the
 *                truth: gateway/readiness.ts; its first line is shown for unready ones)
 *   tunnel       tunnel-server pods Ready; `tunnel-servers` in edgemesh-config set and not
 *                a placeholder (judged as the gateway judges it: gateway/tunnel/servers.ts);
 *                every gateway has a link up to at least one of them (its /status, read
 *                through pods/proxy: which server links are up), and runs with the setting
 *                edgemesh-config holds now
 *   workloads    injected pods run the image the webhook injects now; namespaces labelled
 *                for injection hold no pods started before the label (a rollout is needed)
 */
import { X509Certificate } from 'node:crypto';
import { parseServers, usableServers } from '../gateway/tunnel/servers.ts';
import { ALWAYS_EXCLUDED_NAMESPACES } from '../webhook/config.ts';
import type { CheckResult } from './check-format.ts';
import type { Read } from './check-pre.ts';
import type { PodSummary } from './pods.ts';
import { isGateway, type NodeStatus } from './status-read.ts';
import { PROXY_CONTAINER, type VersionReport, versionReport } from './version-report.ts';

export const WEBHOOK_CONFIG = 'edgemesh-sidecar-injector';
export const WEBHOOK_SECRET = 'edgemesh-webhook-tls';
export const WEBHOOK_SERVICE = 'edgemesh-webhook';
export const MESH_CA = 'edgemesh-mesh-ca';
export const INJECTION_LABEL = 'edgemesh.io/injection';
/** Fail this close to expiry: `edgemesh webhook-tls` renews from 30 days before (webhook/tls/certs.ts). */
export const EXPIRY_DAYS = 30;
const DAY_MS = 86_400_000;
/** Pods or workloads named per finding: enough to act on, not a listing. */
const NAMED = 8;

export interface InstallInput {
  now: Date;
  namespace: string;
  client: VersionReport['client'];
  /** The webhook configuration's caBundles (PEM, one per webhook entry), or null if absent. */
  caBundles: Read<{ webhook: string; pem: string }[] | null>;
  /** The serving certificate in the webhook's Secret (PEM), or null if absent. */
  servingCert: Read<string | null>;
  /** The dry-run pod's init containers, or the API's refusal. */
  probe: Read<{ namespace: string; initContainers: string[] }>;
  /** ca.crt of the ConfigMap (gateways) and of the Secret (signer); null: absent. */
  meshCaConfigMap: Read<string | null>;
  meshCaSecret: Read<string | null>;
  partPods: Read<PodSummary[]>;
  allPods: Read<PodSummary[]>;
  /** /ready's first line (or why it could not be read) of each unready gateway pod. */
  gatewayReadiness: ReadonlyMap<string, string>;
  tunnelServersSetting: Read<string | null>;
  /** Each running gateway's /status (or why it could not be read), through pods/proxy. */
  gatewayStatuses: Read<NodeStatus[]>;
  webhookYaml: Read<string | null>;
  /** Names of namespaces labelled edgemesh.io/injection=enabled. */
  injectionNamespaces: Read<string[]>;
}

const r = (group: string, id: string) => ({ group, id });
const failRead = (group: string, id: string, what: string, err: Error, hint: string): CheckResult => ({
  ...r(group, id),
  status: 'fail',
  message: `could not read ${what}`,
  details: [err.message],
  hint,
});
const named = (items: readonly string[]) =>
  items.length > NAMED ? [...items.slice(0, NAMED), `… and ${items.length - NAMED} more`] : [...items];
const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function certificate(pem: string): X509Certificate {
  return new X509Certificate(pem);
}

/** caBundle ↔ serving certificate, its names and expiry. */
export function webhookCertCheck(input: InstallInput): CheckResult[] {
  const G = 'webhook';
  const fix = 'run edgemesh webhook-tls (it creates or renews the certificate and sets the caBundle)';
  if (input.caBundles instanceof Error)
    return [
      failRead(
        G,
        'webhook-config',
        `MutatingWebhookConfiguration ${WEBHOOK_CONFIG}`,
        input.caBundles,
        'needs get mutatingwebhookconfigurations',
      ),
    ];
  if (input.caBundles === null)
    return [
      {
        ...r(G, 'webhook-config'),
        status: 'fail',
        message: `MutatingWebhookConfiguration ${WEBHOOK_CONFIG} does not exist`,
        hint: 'install edgemesh: edgemesh install | kubectl apply -f - (or kubectl apply -k manifests, then edgemesh webhook-tls)',
      },
    ];
  const out: CheckResult[] = [
    {
      ...r(G, 'webhook-config'),
      status: 'pass',
      message: `MutatingWebhookConfiguration ${WEBHOOK_CONFIG} exists`,
    },
  ];
  if (input.servingCert instanceof Error)
    return [
      ...out,
      failRead(
        G,
        'webhook-cert',
        `Secret ${input.namespace}/${WEBHOOK_SECRET}`,
        input.servingCert,
        `needs get secrets in ${input.namespace}`,
      ),
    ];
  if (input.servingCert === null)
    return [
      ...out,
      {
        ...r(G, 'webhook-cert'),
        status: 'fail',
        message: `the webhook's serving certificate (Secret ${input.namespace}/${WEBHOOK_SECRET}, tls.crt) does not exist`,
        hint: fix,
      },
    ];
  let serving: X509Certificate;
  try {
    serving = certificate(input.servingCert);
  } catch (err) {
    return [
      ...out,
      {
        ...r(G, 'webhook-cert'),
        status: 'fail',
        message: `Secret ${WEBHOOK_SECRET} tls.crt is not a PEM certificate: ${(err as Error).message}`,
        hint: fix,
      },
    ];
  }
  const unsigned: string[] = [];
  for (const b of input.caBundles) {
    if (!b.pem.trim()) {
      unsigned.push(`${b.webhook}: caBundle is empty`);
      continue;
    }
    try {
      const ca = certificate(b.pem);
      if (!serving.checkIssued(ca) || !serving.verify(ca.publicKey))
        unsigned.push(
          `${b.webhook}: its caBundle (${ca.subject.replace(/\n/g, ', ')}) did not sign the serving certificate`,
        );
    } catch (err) {
      unsigned.push(`${b.webhook}: caBundle is not a PEM certificate (${(err as Error).message})`);
    }
  }
  out.push(
    unsigned.length === 0
      ? {
          ...r(G, 'webhook-ca-bundle'),
          status: 'pass',
          message: `the caBundle of ${plural(input.caBundles.length, 'webhook')} matches the serving certificate`,
        }
      : {
          ...r(G, 'webhook-ca-bundle'),
          status: 'fail',
          message:
            'the caBundle does not match the serving certificate: the API server will refuse the webhook and pod creation fails',
          details: unsigned,
          hint: fix,
        },
  );
  const dns = `${WEBHOOK_SERVICE}.${input.namespace}.svc`;
  const names = (serving.subjectAltName ?? '').split(/,\s*/).map((n) => n.replace(/^DNS:/, ''));
  if (!names.includes(dns))
    out.push({
      ...r(G, 'webhook-cert-names'),
      status: 'fail',
      message: `the serving certificate does not name ${dns}`,
      details: [`it names: ${names.join(', ') || 'nothing'}`],
      hint: fix,
    });
  const daysLeft = Math.floor((new Date(serving.validTo).getTime() - input.now.getTime()) / DAY_MS);
  out.push(
    daysLeft >= EXPIRY_DAYS
      ? {
          ...r(G, 'webhook-cert-expiry'),
          status: 'pass',
          message: `the serving certificate is valid for ${daysLeft} more days`,
        }
      : {
          ...r(G, 'webhook-cert-expiry'),
          status: 'fail',
          message:
            daysLeft < 0
              ? `the serving certificate expired ${-daysLeft} days ago`
              : `the serving certificate expires in ${daysLeft} days`,
          hint: fix,
        },
  );
  return out;
}

export function webhookPodsCheck(input: InstallInput): CheckResult {
  const G = 'webhook';
  if (input.partPods instanceof Error)
    return failRead(
      G,
      'webhook-ready',
      `the pods in ${input.namespace}`,
      input.partPods,
      `needs list pods in ${input.namespace}`,
    );
  const pods = input.partPods.filter((p) => p.labels['app.kubernetes.io/name'] === 'edgemesh-webhook');
  const ready = pods.filter((p) => p.ready);
  const unready = pods
    .filter((p) => !p.ready)
    .map((p) => `${p.name} on ${p.node || '(unscheduled)'}: ${p.phase}, not Ready`);
  if (ready.length === 0)
    return {
      ...r(G, 'webhook-ready'),
      status: 'fail',
      message:
        pods.length === 0 ? 'no webhook pods' : `none of ${plural(pods.length, 'webhook pod')} is Ready`,
      details: named(unready),
      hint: `kubectl -n ${input.namespace} describe deployment edgemesh-webhook; with failurePolicy Fail, no pod in an injected namespace can be created now`,
    };
  if (unready.length > 0)
    return {
      ...r(G, 'webhook-ready'),
      status: 'warn',
      message: `${ready.length} of ${plural(pods.length, 'webhook pod')} Ready`,
      details: named(unready),
      hint: `kubectl -n ${input.namespace} describe pod NAME`,
    };
  return {
    ...r(G, 'webhook-ready'),
    status: 'pass',
    message: `${ready.length} of ${plural(pods.length, 'webhook pod')} Ready`,
  };
}

export function webhookProbeCheck(input: InstallInput): CheckResult {
  const G = 'webhook';
  const p = input.probe;
  if (p instanceof Error)
    return {
      ...r(G, 'webhook-answers'),
      status: 'fail',
      message: 'a dry-run pod labelled for injection was refused',
      details: [p.message],
      hint: 'a "failed calling webhook" error names the TLS or network problem between the API server and the webhook Service; forbidden: the probe needs create pods in --probe-namespace',
    };
  if (!p.initContainers.includes(PROXY_CONTAINER) && input.caBundles === null)
    return {
      ...r(G, 'webhook-answers'),
      status: 'fail',
      message: `a dry-run pod labelled sidecar.edgemesh.io/inject=true in ${p.namespace} came back without ${PROXY_CONTAINER}: no webhook configuration calls the webhook`,
      hint: 'install edgemesh: edgemesh install | kubectl apply -f - (or kubectl apply -k manifests, then edgemesh webhook-tls)',
    };
  if (!p.initContainers.includes(PROXY_CONTAINER))
    return {
      ...r(G, 'webhook-answers'),
      status: 'fail',
      message: `a dry-run pod labelled sidecar.edgemesh.io/inject=true in ${p.namespace} came back without ${PROXY_CONTAINER}`,
      hint: `is ${p.namespace} labelled ${INJECTION_LABEL}=disabled or excluded? pick another with --probe-namespace; else see the webhook's logs`,
    };
  return {
    ...r(G, 'webhook-answers'),
    status: 'pass',
    message: `the webhook injects: a dry-run pod in ${p.namespace} came back with ${PROXY_CONTAINER}`,
  };
}

export function meshCaCheck(input: InstallInput): CheckResult {
  const G = 'mesh CA';
  const fix = 'run edgemesh webhook-tls (it creates the mesh CA once and publishes its certificate)';
  const cm = input.meshCaConfigMap;
  if (cm instanceof Error)
    return failRead(
      G,
      'mesh-ca',
      `ConfigMap ${input.namespace}/${MESH_CA}`,
      cm,
      `needs get configmaps in ${input.namespace}`,
    );
  if (cm === null)
    return {
      ...r(G, 'mesh-ca'),
      status: 'fail',
      message: `ConfigMap ${input.namespace}/${MESH_CA} (ca.crt, what gateways trust) does not exist`,
      details: ['gateways cannot start their tunnel without it (not Ready)'],
      hint: fix,
    };
  let cert: X509Certificate;
  try {
    cert = certificate(cm);
  } catch (err) {
    return {
      ...r(G, 'mesh-ca'),
      status: 'fail',
      message: `ConfigMap ${MESH_CA} ca.crt is not a PEM certificate: ${(err as Error).message}`,
      hint: fix,
    };
  }
  const daysLeft = Math.floor((new Date(cert.validTo).getTime() - input.now.getTime()) / DAY_MS);
  if (daysLeft < EXPIRY_DAYS)
    return {
      ...r(G, 'mesh-ca'),
      status: 'fail',
      message:
        daysLeft < 0
          ? `the mesh CA expired ${-daysLeft} days ago`
          : `the mesh CA expires in ${daysLeft} days`,
      hint: 'a new mesh CA re-enrols every node: see docs/tunnel.md',
    };
  const secret = input.meshCaSecret;
  if (secret instanceof Error)
    return {
      ...r(G, 'mesh-ca'),
      status: 'warn',
      message: `the mesh CA certificate is valid for ${daysLeft} more days; its Secret could not be read to compare`,
      details: [secret.message],
      hint: `needs get secrets in ${input.namespace}`,
    };
  if (secret === null)
    return {
      ...r(G, 'mesh-ca'),
      status: 'fail',
      message: `Secret ${input.namespace}/${MESH_CA} (the signer's CA key) does not exist: no node can enrol`,
      hint: fix,
    };
  if (secret.trim() !== cm.trim())
    return {
      ...r(G, 'mesh-ca'),
      status: 'fail',
      message: `ConfigMap ${MESH_CA} and Secret ${MESH_CA} hold different CA certificates: gateways would trust a CA the signer does not sign with`,
      hint: `copy the Secret's ca.crt into the ConfigMap (edgemesh webhook-tls does)`,
    };
  return {
    ...r(G, 'mesh-ca'),
    status: 'pass',
    message: `the mesh CA exists (ConfigMap and Secret agree) and is valid for ${daysLeft} more days`,
  };
}

const isRunningInjected = (p: PodSummary) =>
  p.node !== '' &&
  (p.phase === 'Running' || p.phase === 'Pending') &&
  p.initContainers.some((c) => c.name === PROXY_CONTAINER);

export function gatewaysCheck(input: InstallInput): CheckResult {
  const G = 'gateways';
  if (input.partPods instanceof Error)
    return failRead(
      G,
      'gateways-ready',
      `the pods in ${input.namespace}`,
      input.partPods,
      `needs list pods in ${input.namespace}`,
    );
  if (input.allPods instanceof Error)
    return failRead(
      G,
      'gateways-ready',
      'the pods in all namespaces',
      input.allPods,
      'needs list pods cluster-wide',
    );
  const injectedByNode = new Map<string, number>();
  for (const p of input.allPods.filter(isRunningInjected))
    injectedByNode.set(p.node, (injectedByNode.get(p.node) ?? 0) + 1);
  const gateways = input.partPods.filter(isGateway);
  const problems: string[] = [];
  for (const [node, n] of [...injectedByNode].sort(([a], [b]) => a.localeCompare(b))) {
    const here = gateways.filter((g) => g.node === node);
    if (here.some((g) => g.ready)) continue;
    if (here.length === 0) problems.push(`${node} (${plural(n, 'injected pod')}): no gateway pod`);
    for (const g of here)
      problems.push(
        `${node} (${plural(n, 'injected pod')}): ${g.name} not Ready: ${input.gatewayReadiness.get(g.name) ?? g.phase}`,
      );
  }
  if (injectedByNode.size === 0)
    return {
      ...r(G, 'gateways-ready'),
      status: 'pass',
      message: `no node runs injected pods yet (${plural(gateways.length, 'gateway')} in ${input.namespace})`,
    };
  if (problems.length === 0)
    return {
      ...r(G, 'gateways-ready'),
      status: 'pass',
      message: `a Ready gateway on each of the ${plural(injectedByNode.size, 'node')} running injected pods`,
    };
  return {
    ...r(G, 'gateways-ready'),
    status: 'fail',
    message: `${plural(problems.length, 'node')} running injected pods without a Ready gateway`,
    details: named(problems),
    hint: `the gateway's /ready says why (kubectl get --raw /api/v1/namespaces/${input.namespace}/pods/POD:15090/proxy/ready, or curl http://127.0.0.1:15090/ready on the node); no gateway pod: check the DaemonSet's tolerations and nodeSelector`,
  };
}

export function tunnelServersCheck(input: InstallInput): CheckResult[] {
  const G = 'tunnel';
  const out: CheckResult[] = [];
  if (input.partPods instanceof Error)
    out.push(
      failRead(
        G,
        'tunnel-servers-ready',
        `the pods in ${input.namespace}`,
        input.partPods,
        `needs list pods in ${input.namespace}`,
      ),
    );
  else {
    const pods = input.partPods.filter(
      (p) => p.labels['app.kubernetes.io/name'] === 'edgemesh-tunnel-server',
    );
    const ready = pods.filter((p) => p.ready).length;
    out.push(
      ready > 0
        ? {
            ...r(G, 'tunnel-servers-ready'),
            status: ready === pods.length ? 'pass' : 'warn',
            message: `${ready} of ${plural(pods.length, 'tunnel-server pod')} Ready`,
            ...(ready === pods.length
              ? {}
              : {
                  details: named(pods.filter((p) => !p.ready).map((p) => `${p.name}: not Ready`)),
                  hint: `kubectl -n ${input.namespace} describe pod NAME`,
                }),
          }
        : {
            ...r(G, 'tunnel-servers-ready'),
            status: 'fail',
            message:
              pods.length === 0
                ? 'no tunnel-server pods'
                : `none of ${plural(pods.length, 'tunnel-server pod')} is Ready`,
            details: named(pods.map((p) => `${p.name} on ${p.node || '(unscheduled)'}: ${p.phase}`)),
            hint: `kubectl -n ${input.namespace} describe deployment edgemesh-tunnel-server (it avoids nodes labelled node-role.kubernetes.io/edge)`,
          },
    );
  }
  const setting = input.tunnelServersSetting;
  const patch = `edgemesh config set tunnel-servers PUBLIC_IP:20006${input.namespace === 'edgemesh-system' ? '' : ` --namespace ${input.namespace}`} (the tunnel-server Service's public address: kubectl -n ${input.namespace} get service edgemesh-tunnel-server; it restarts the gateways)`;
  if (setting instanceof Error)
    out.push(
      failRead(
        G,
        'tunnel-servers-setting',
        `ConfigMap ${input.namespace}/edgemesh-config`,
        setting,
        `needs get configmaps in ${input.namespace}`,
      ),
    );
  else if (setting === null || setting.trim() === '')
    out.push({
      ...r(G, 'tunnel-servers-setting'),
      status: 'fail',
      message:
        'tunnel-servers is not set in ConfigMap edgemesh-config: gateways carry same-node streams only',
      hint: patch,
    });
  else {
    try {
      const { servers, ignored } = usableServers(
        parseServers(setting.trim().split(/[\s,]+/), 'tunnel-servers'),
      );
      if (servers.length === 0)
        out.push({
          ...r(G, 'tunnel-servers-setting'),
          status: 'fail',
          message: `tunnel-servers holds only ${ignored.join(', ')}, a placeholder that never resolves: gateways are not Ready`,
          hint: patch,
        });
      else if (ignored.length > 0)
        out.push({
          ...r(G, 'tunnel-servers-setting'),
          status: 'warn',
          message: `tunnel-servers: ${servers.map((s) => `${s.host}:${s.port}`).join(', ')}; ${ignored.join(', ')} left out (a placeholder)`,
          hint: 'remove the placeholder from edgemesh-config',
        });
      else
        out.push({
          ...r(G, 'tunnel-servers-setting'),
          status: 'pass',
          message: `tunnel-servers is set: ${servers.map((s) => `${s.host}:${s.port}`).join(', ')}`,
        });
    } catch (err) {
      out.push({
        ...r(G, 'tunnel-servers-setting'),
        status: 'fail',
        message: `tunnel-servers in edgemesh-config: ${(err as Error).message}`,
        hint: patch,
      });
    }
  }
  return out;
}

/** The usable addresses of a tunnel-servers setting, as the gateway's /status names them (HOST:PORT). */
function configuredServers(setting: Read<string | null>): string[] {
  if (setting === null || setting instanceof Error || setting.trim() === '') return [];
  try {
    return usableServers(parseServers(setting.trim().split(/[\s,]+/), 'tunnel-servers')).servers.map(
      (s) => `${s.host}:${s.port}`,
    );
  } catch {
    return [];
  }
}

/**
 * Each gateway reaches at least one tunnel-server: its /status lists its server links and which
 * are up. A gateway whose links are all down (or whose tunnel never started) reaches peers
 * behind NATs only through what its peer book remembers: it fails. Some links down, a gateway
 * still on an older tunnel-servers than edgemesh-config holds, or a gateway the API server
 * cannot ask (nodes behind a NAT): a warning naming the node and what to run there.
 */
export function tunnelLinksCheck(input: InstallInput): CheckResult[] {
  const G = 'tunnel';
  const id = 'tunnel-links';
  const ns = input.namespace;
  if (input.gatewayStatuses instanceof Error)
    return [failRead(G, id, "the gateways' /status", input.gatewayStatuses, `needs get pods/proxy in ${ns}`)];
  const configured = configuredServers(input.tunnelServersSetting);
  if (configured.length === 0)
    return [
      {
        ...r(G, id),
        status: 'warn',
        message: 'tunnel-server links not checked: no usable tunnel-servers setting (see above)',
        hint: 'set tunnel-servers first: edgemesh config set tunnel-servers PUBLIC_IP:20006',
      },
    ];
  const statuses = input.gatewayStatuses;
  if (statuses.length === 0)
    return [
      { ...r(G, id), status: 'pass', message: 'no running gateway to ask about its tunnel-server links' },
    ];
  const none: string[] = [];
  const some: string[] = [];
  const stale: string[] = [];
  const starting: string[] = [];
  const unchecked: string[] = [];
  let allUp = 0;
  for (const n of statuses) {
    if (!('status' in n.result)) {
      unchecked.push(`${n.node} (${n.pod}): ${n.result.error}; ${n.result.hint}`);
      continue;
    }
    const t = n.result.status.tunnel;
    if (t.state === 'off') {
      none.push(
        `${n.node}: tunnel off: the gateway started before tunnel-servers was set and reads it only at start`,
      );
      continue;
    }
    if (t.servers.length === 0) {
      const line = `${n.node}: tunnel ${t.state}, no server link yet (${t.detail}); configured: ${configured.join(', ')}`;
      if (t.state === 'starting') starting.push(line);
      else none.push(line);
      continue;
    }
    const down = t.servers.filter((x) => !x.up).map((x) => x.address);
    const running = t.servers.map((x) => x.address);
    if (down.length === t.servers.length)
      none.push(`${n.node}: no tunnel-server link up: ${down.join(', ')} unreachable`);
    else if (down.length > 0)
      some.push(
        `${n.node}: ${down.join(', ')} unreachable (${t.servers.length - down.length} of ${t.servers.length} links up)`,
      );
    else allUp++;
    const same = running.length === configured.length && running.every((a) => configured.includes(a));
    if (!same)
      stale.push(
        `${n.node}: runs with ${running.join(', ')}; edgemesh-config holds ${configured.join(', ')}`,
      );
  }
  const checked = statuses.length - unchecked.length;
  const reach = `TCP and UDP from the node to each address must pass (firewall, security group); the address must be the tunnel-server Service's public one (kubectl -n ${ns} get service edgemesh-tunnel-server; edgemesh config get); edgemesh netcheck NODE shows what the node's NAT does`;
  const out: CheckResult[] = [];
  if (none.length > 0)
    out.push({
      ...r(G, id),
      status: 'fail',
      message: `${plural(none.length, 'gateway')} of ${checked} asked reach${none.length === 1 ? 'es' : ''} no tunnel-server: pods there reach other nodes only through peers they already know`,
      details: named([...none, ...some]),
      hint: `${reach}; a gateway whose tunnel is off: kubectl -n ${ns} rollout restart daemonset/edgemesh-gateway`,
    });
  else if (some.length > 0 || starting.length > 0)
    out.push({
      ...r(G, id),
      status: 'warn',
      message:
        some.length > 0
          ? `${plural(some.length, 'gateway')} of ${checked} asked cannot reach every tunnel-server (peers registered only at the others cannot rendezvous with them)`
          : `${plural(starting.length, 'gateway')} of ${checked} asked ${starting.length === 1 ? 'is' : 'are'} still starting the tunnel`,
      details: named([...some, ...starting]),
      hint: some.length > 0 ? reach : 'run edgemesh check again in a minute',
    });
  else
    out.push({
      ...r(G, id),
      status: 'pass',
      message: `each of the ${plural(checked, 'gateway')} asked has ${allUp === checked && configured.length > 1 ? 'every' : 'a'} tunnel-server link up`,
    });
  if (stale.length > 0)
    out.push({
      ...r(G, 'tunnel-servers-applied'),
      status: 'warn',
      message: `${plural(stale.length, 'gateway')} still run${stale.length === 1 ? 's' : ''} with another tunnel-servers than edgemesh-config holds (gateways read it at start)`,
      details: named(stale),
      hint: `kubectl -n ${ns} rollout restart daemonset/edgemesh-gateway (edgemesh config set does it when it changes the setting)`,
    });
  if (unchecked.length > 0)
    out.push({
      ...r(G, 'tunnel-links-unchecked'),
      status: 'warn',
      message: `${plural(unchecked.length, 'gateway')} could not be asked about ${unchecked.length === 1 ? 'its' : 'their'} tunnel-server links`,
      details: named(unchecked),
      hint: `on such a node: curl -s http://127.0.0.1:15090/status (tunnel.servers[].up), or edgemesh status NODE once the API server reaches it`,
    });
  return out;
}

/** Workload that made a pod, for `kubectl rollout restart`: deployment/NAME, statefulset/NAME, …, else pod/NAME. */
export function workloadOf(p: PodSummary): string {
  const o = p.owner;
  if (!o) return `pod/${p.name}`;
  if (o.kind === 'ReplicaSet') {
    const hash = p.labels['pod-template-hash'];
    return hash && o.name.endsWith(`-${hash}`)
      ? `deployment/${o.name.slice(0, -hash.length - 1)}`
      : `replicaset/${o.name}`;
  }
  return `${o.kind.toLowerCase()}/${o.name}`;
}

const RESTARTABLE = /^(deployment|statefulset|daemonset)\//;

function workloads(pods: readonly PodSummary[]): string[] {
  const by = new Map<string, number>();
  for (const p of pods) {
    const key = `${p.namespace} ${workloadOf(p)}`;
    by.set(key, (by.get(key) ?? 0) + 1);
  }
  return [...by]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, n]) => {
      const [ns, w] = key.split(' ');
      const how = RESTARTABLE.test(w)
        ? `kubectl -n ${ns} rollout restart ${w}`
        : `delete and recreate ${w} in ${ns}`;
      return `${ns}/${w} (${plural(n, 'pod')}): ${how}`;
    });
}

export function sidecarVersionsCheck(input: InstallInput): CheckResult {
  const G = 'workloads';
  if (input.allPods instanceof Error)
    return failRead(
      G,
      'sidecar-versions',
      'the pods in all namespaces',
      input.allPods,
      'needs list pods cluster-wide',
    );
  if (input.partPods instanceof Error)
    return failRead(
      G,
      'sidecar-versions',
      `the pods in ${input.namespace}`,
      input.partPods,
      `needs list pods in ${input.namespace}`,
    );
  const report = versionReport({
    client: input.client,
    partPods: input.partPods,
    sidecarPods: input.allPods,
    webhookConfig: input.webhookYaml,
  });
  const s = report.sidecars;
  if (!s || s.total === 0)
    return { ...r(G, 'sidecar-versions'), status: 'pass', message: 'no injected pods yet' };
  if ('why' in s.injected)
    return {
      ...r(G, 'sidecar-versions'),
      status: 'warn',
      message: `${plural(s.total, 'injected pod')}; which image the webhook injects now cannot be told`,
      details: [s.injected.why],
      hint: 'edgemesh version shows the sidecars by image',
    };
  const behind = input.allPods.filter((p) =>
    s.pods.some((x) => x.notInjectedImage && x.namespace === p.namespace && x.name === p.name),
  );
  if (behind.length === 0)
    return {
      ...r(G, 'sidecar-versions'),
      status: 'pass',
      message: `all ${plural(s.total, 'injected pod')} run the injected image ${s.injected.image}`,
    };
  return {
    ...r(G, 'sidecar-versions'),
    status: 'fail',
    message: `${behind.length} of ${plural(s.total, 'injected pod')} run another sidecar than the injected ${s.injected.image} (injected before an upgrade)`,
    details: named(workloads(behind)),
    hint: 'restart those workloads: their new pods get the current sidecar',
  };
}

export function pendingInjectionCheck(input: InstallInput): CheckResult {
  const G = 'workloads';
  if (input.injectionNamespaces instanceof Error)
    return failRead(
      G,
      'pending-injection',
      `namespaces labelled ${INJECTION_LABEL}=enabled`,
      input.injectionNamespaces,
      'needs list namespaces',
    );
  if (input.allPods instanceof Error)
    return failRead(
      G,
      'pending-injection',
      'the pods in all namespaces',
      input.allPods,
      'needs list pods cluster-wide',
    );
  const labelled = input.injectionNamespaces.filter(
    (n) => !(ALWAYS_EXCLUDED_NAMESPACES as readonly string[]).includes(n),
  );
  const waiting = input.allPods.filter(
    (p) =>
      labelled.includes(p.namespace) &&
      (p.phase === 'Running' || p.phase === 'Pending') &&
      !p.terminating &&
      !p.hostNetwork &&
      p.labels['sidecar.edgemesh.io/inject'] !== 'false' &&
      p.annotations['sidecar.edgemesh.io/inject'] !== 'false' &&
      !p.initContainers.some((c) => c.name === PROXY_CONTAINER) &&
      !p.containers.some((c) => c.name === PROXY_CONTAINER),
  );
  if (labelled.length === 0)
    return {
      ...r(G, 'pending-injection'),
      status: 'pass',
      message: `no namespace is labelled ${INJECTION_LABEL}=enabled yet`,
    };
  if (waiting.length === 0)
    return {
      ...r(G, 'pending-injection'),
      status: 'pass',
      message: `every pod in the ${plural(labelled.length, 'namespace')} labelled ${INJECTION_LABEL}=enabled is injected`,
    };
  return {
    ...r(G, 'pending-injection'),
    status: 'fail',
    message: `${plural(waiting.length, 'pod')} in namespaces labelled ${INJECTION_LABEL}=enabled ${waiting.length === 1 ? 'is' : 'are'} not injected (started before the label)`,
    details: named(workloads(waiting)),
    hint: 'restart them so their new pods are injected (a pod that must stay out: label it sidecar.edgemesh.io/inject=false)',
  };
}

export function installChecks(input: InstallInput): CheckResult[] {
  return [
    ...webhookCertCheck(input),
    webhookPodsCheck(input),
    webhookProbeCheck(input),
    meshCaCheck(input),
    gatewaysCheck(input),
    ...tunnelServersCheck(input),
    ...tunnelLinksCheck(input),
    sidecarVersionsCheck(input),
    pendingInjectionCheck(input),
  ];
}
