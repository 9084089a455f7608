/**
 * `edgemesh netcheck NODE`: flags only here; the gateway's document is read as `edgemesh
 * status` reads it (status-read.ts), the report is netcheck.ts.
 */
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { isDnsLabel } from '../lib/names.ts';
import { ClusterReader } from './cluster.ts';
import { clusterOptions } from './flags.ts';
import { chooseKubeconfig, connect } from './kube.ts';
import { formatNetcheck } from './netcheck.ts';
import { readGatewayStatuses } from './status-read.ts';

export const netcheckCommand = defineCommand(
  {
    name: 'netcheck',
    summary:
      "What NODE's NAT looks like, from what its gateway's tunnel learnt: public address, port " +
      'preservation, TCP punch outcomes (connected, RST, dropped), UDP (ICE) outcomes.',
    details: [
      "Nothing is sent for the report: it reads the gateway's /status (as edgemesh status does, through",
      'the API server) and tells what its links to the tunnel-servers, punch probes and punch attempts',
      'showed. A node whose peers were all on its LAN or that has not needed a punch yet has little to',
      'tell. Exit 1 when the gateway could not be read.',
      '',
      'Examples: edgemesh netcheck edge-1',
      '          edgemesh netcheck edge-1 -o json',
    ].join('\n'),
    positionals: true,
    options: {
      ...clusterOptions('answer'),
    },
  },
  async (o) => {
    const [node, ...extra] = o._;
    if (!node || extra.length > 0) throw configError('give one NODE: edgemesh netcheck NODE');
    if (node.length > 253 || !node.split('.').every(isDnsLabel))
      throw configError(`NODE ${JSON.stringify(node)} is not a node name`);
    const choice = chooseKubeconfig(o.kubeconfig, process.env);
    if (choice.kind === 'none') throw configError(choice.why);
    const { api } = await connect(choice, o.context);
    try {
      const [found] = await readGatewayStatuses(
        api,
        new ClusterReader(api, o.timeout * 1000),
        o.namespace,
        [node],
        o.timeout * 1000,
      );
      if (!found || !('status' in found.result)) {
        const r = found?.result ?? { error: `no gateway on ${node}`, hint: '' };
        process.stderr.write(
          `edgemesh netcheck: ${node}: ${'error' in r ? `${r.error}\n  hint: ${r.hint}` : ''}\n`,
        );
        return 1;
      }
      const doc = found.result.status;
      process.stdout.write(
        o.output === 'json'
          ? `${JSON.stringify({ node, servers: doc.tunnel.servers, nat: doc.nat }, null, 2)}\n`
          : formatNetcheck(doc),
      );
      return 0;
    } finally {
      api.close();
    }
  },
);
