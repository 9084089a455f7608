/**
 * The flags every operator command shares (which cluster, which namespace, output, patience):
 * one definition so `version`, `check`, `status` and `netcheck` read and validate them alike.
 */
import { isDnsLabel } from '../lib/names.ts';

export const namespaceOption = (description: string, def: string) => ({
  type: 'string' as const,
  default: def,
  description,
  validate: (v: string) => (isDnsLabel(v) ? undefined : 'must be a namespace name (RFC 1123 label)'),
});

/** --kubeconfig, --context, --namespace, -o, --timeout; `waitsFor` ends the timeout's help. */
export function clusterOptions(waitsFor: string) {
  return {
    kubeconfig: {
      type: 'string' as const,
      description: 'kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)',
    },
    context: { type: 'string' as const, description: 'kubeconfig context (default: the current one)' },
    namespace: namespaceOption("edgemesh's namespace", 'edgemesh-system'),
    output: {
      type: 'string' as const,
      short: 'o',
      choices: ['text', 'json'] as const,
      default: 'text',
      description: 'output format',
    },
    timeout: {
      type: 'integer' as const,
      default: 10,
      min: 1,
      max: 300,
      description: `seconds to wait for each ${waitsFor}`,
    },
  };
}
