import { helpText, parseCommand, type Subcommand } from '../lib/cli.ts';
import { describeError, EdgemeshError } from '../lib/errors.ts';

// Each part owns its flags in its own cli.ts; this file only dispatches. Parts are loaded
// lazily so `edgemesh init` (in every pod) does not pay for the webhook's dependencies.
const commands: Record<string, { summary: string; load: () => Promise<Subcommand> }> = {
  webhook: {
    summary: 'HTTPS mutating admission webhook that injects edgemesh into pods',
    load: async () => (await import('../webhook/cli.ts')).webhookCommand as Subcommand,
  },
  inject: {
    summary: 'print manifests with edgemesh injected (for GitOps without a webhook)',
    load: async () => (await import('../webhook/cli.ts')).injectCommand as Subcommand,
  },
  uninject: {
    summary: 'print manifests with what inject added removed (its inverse)',
    load: async () => (await import('../webhook/cli.ts')).uninjectCommand as Subcommand,
  },
  'webhook-tls': {
    summary: "create/rotate the webhook's certificates and caBundle (TLS bootstrap)",
    load: async () => (await import('../webhook/tls/cli.ts')).webhookTlsCommand as Subcommand,
  },
  init: {
    summary: "install the pod's traffic-capture iptables rules (init container)",
    load: async () => (await import('../init/cli.ts')).initCommand as Subcommand,
  },
  sidecar: {
    summary: 'per-pod DNS server and transparent TCP/HTTP proxy',
    load: async () => (await import('../sidecar/cli.ts')).sidecarCommand as Subcommand,
  },
  gateway: {
    summary: 'per-node catalog watcher, sidecar feed and tunnel to peer nodes',
    load: async () => (await import('../gateway/cli.ts')).gatewayCommand as Subcommand,
  },
  'tunnel-server': {
    summary: 'rendezvous and relay for gateways behind NATs',
    load: async () => (await import('../tunnel-server/cli.ts')).tunnelServerCommand as Subcommand,
  },
  signer: {
    summary: 'signs edgemesh certificates from the Kubernetes CSR API (holds the mesh CA key)',
    load: async () => (await import('../signer/cli.ts')).signerCommand as Subcommand,
  },
  install: {
    summary:
      'print the manifests with fresh TLS for `edgemesh install | kubectl apply -f -` (keeps a mesh CA the cluster has)',
    load: async () => (await import('../ctl/install-cli.ts')).installCommand as Subcommand,
  },
  config: {
    summary:
      'get or set the gateway settings in edgemesh-config (tunnel-servers, …); set restarts the gateways',
    load: async () => (await import('../ctl/config-cli.ts')).configCommand as Subcommand,
  },
  version: {
    summary:
      "this client's version and commit; with a kubeconfig, the versions the cluster runs and any skew",
    load: async () => (await import('../ctl/cli.ts')).versionCommand as Subcommand,
  },
  check: {
    summary: 'check an installation (or, with --pre, a cluster before installing): ✔/× per check, with hints',
    load: async () => (await import('../ctl/check-cli.ts')).checkCommand as Subcommand,
  },
  status: {
    summary: "each gateway's peers: path (direct, punched TCP/UDP, relay via which), RTT, streams, bytes",
    load: async () => (await import('../ctl/status-cli.ts')).statusCommand as Subcommand,
  },
  netcheck: {
    summary: "what a node's NAT looks like, from its gateway's tunnel: public address, ports, punches",
    load: async () => (await import('../ctl/netcheck-cli.ts')).netcheckCommand as Subcommand,
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length)) + 2;
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`);
  return `Usage: edgemesh <command> [options]\n\nCommands:\n${rows.join('\n')}\n\nRun 'edgemesh <command> --help' for a command's options.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === '--version') {
    // The client alone, as `edgemesh version --client` says it (no cluster, no flags).
    process.stdout.write(`${(await import('../ctl/cli.ts')).clientVersionLine()}\n`);
    return 0;
  }
  const entry = commands[name];
  if (!entry) {
    process.stderr.write(`edgemesh: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  const command = await entry.load();
  try {
    const options = parseCommand(command.spec, rest);
    if (options.help) {
      process.stdout.write(helpText(command.spec));
      return 0;
    }
    return (await command.run(options)) ?? 0;
  } catch (err) {
    process.stderr.write(`edgemesh ${name}: ${describeError(err)}\n`);
    return err instanceof EdgemeshError && err.code === 'EDGEMESH_ERR_CONFIG' ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Long-running parts keep the event loop alive and exit through their shutdown handler.
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`edgemesh: ${describeError(err)}\n`);
    process.exitCode = 1;
  },
);
