/**
 * `edgemesh status [NODE…]`: flags only here; reading in status-read.ts, text in
 * status-format.ts.
 */
import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
import { isDnsLabel } from '../lib/names.ts';
import { ClusterReader } from './cluster.ts';
import { clusterOptions } from './flags.ts';
import { chooseKubeconfig, connect } from './kube.ts';
import { formatStatus } from './status-format.ts';
import { readGatewayStatuses } from './status-read.ts';

/** Node names are DNS subdomains (RFC 1123), at most 253 characters. */
const isNodeName = (v: string) => v.length <= 253 && v.split('.').every(isDnsLabel);

export const statusCommand = defineCommand(
  {
    name: 'status',
    summary:
      "Each gateway's peers: the path to each (direct, punched TCP, punched UDP, relay via which " +
      'tunnel-server), round trip, streams, bytes and how long the path has been up.',
    details: [
      "Read from each gateway's /status through the API server (pods/proxy on its metrics port),",
      'so nothing new is opened on the nodes. The API server cannot dial nodes behind a NAT',
      '(KubeEdge edge nodes): those are listed with the reason and a command to run on the node.',
      'Exit 0 when every gateway answered, 1 when one could not be read.',
      '',
      'Needs: list pods and get pods/proxy in the edgemesh namespace.',
      '',
      'Examples: edgemesh status',
      '          edgemesh status edge-1 edge-2 -o json',
    ].join('\n'),
    positionals: true,
    options: {
      ...clusterOptions('answer'),
    },
  },
  async (o) => {
    for (const n of o._)
      if (!isNodeName(n)) throw configError(`NODE ${JSON.stringify(n)} is not a node name`);
    const choice = chooseKubeconfig(o.kubeconfig, process.env);
    if (choice.kind === 'none') throw configError(choice.why);
    const { api } = await connect(choice, o.context);
    try {
      const reader = new ClusterReader(api, o.timeout * 1000);
      const nodes = await readGatewayStatuses(api, reader, o.namespace, o._, o.timeout * 1000);
      if (o.output === 'json')
        process.stdout.write(`${JSON.stringify({ namespace: o.namespace, nodes }, null, 2)}\n`);
      else process.stdout.write(formatStatus(nodes, o.namespace));
      return nodes.length > 0 && nodes.every((n) => 'status' in n.result) ? 0 : 1;
    } finally {
      api.close();
    }
  },
);
