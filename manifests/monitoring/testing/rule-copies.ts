/**
 * The alert rules exist once, in manifests/monitoring/edgemesh.rules.yaml; the PrometheusRule
 * for kustomize (prometheus-rule.yaml) and the chart's files/edgemesh.rules.yaml are derived
 * from it, byte for byte, so an edit in one place cannot drift (rules.test.ts checks, and
 * rewrites them with REFRESH_GOLDEN=1).
 */
export const PROMETHEUS_RULE_HEADER = `# Generated from edgemesh.rules.yaml (REFRESH_GOLDEN=1 npx vitest run
# manifests/monitoring/rules.test.ts): the same groups as a Prometheus Operator PrometheusRule,
# as the Helm chart's monitoring.rules.enabled renders it. Edit edgemesh.rules.yaml, not this.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: edgemesh
  namespace: edgemesh-system
  labels:
    app.kubernetes.io/part-of: edgemesh
spec:
`;

/** prometheus-rule.yaml for `rules` (the rules file's text): its lines under `spec:`, indented as Helm's `indent 2` does (empty lines kept empty). */
export function prometheusRuleText(rules: string): string {
  const body = rules
    .replace(/\n$/, '')
    .split('\n')
    .map((l) => (l === '' ? '' : `  ${l}`));
  return `${PROMETHEUS_RULE_HEADER}${body.join('\n')}\n`;
}
