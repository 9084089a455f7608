import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { prometheusBinary, runTool } from './testing/prometheus-tools.ts';
import { prometheusRuleText } from './testing/rule-copies.ts';

// The alert rules (edgemesh.rules.yaml) against the real promtool from Debian's `prometheus`
// package: the file checks, every tests/*.test.yaml passes `promtool test rules`, and every
// alert has a case where it fires and one where it does not. Its copies (the kustomize
// PrometheusRule, the chart's file) are derived from it byte for byte; REFRESH_GOLDEN=1
// rewrites them. A missing promtool fails here, naming scripts/setup.
const dir = import.meta.dirname;
const root = join(dir, '../..');
const rulesFile = join(dir, 'edgemesh.rules.yaml');
const testsDir = join(dir, 'tests');
const testFiles = readdirSync(testsDir)
  .filter((f) => f.endsWith('.test.yaml'))
  .sort();

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const groups = (YAML.parse(readFileSync(rulesFile, 'utf8')) as { groups: { name: string; rules: Rule[] }[] })
  .groups;
const alerts = groups.flatMap((g) => g.rules).filter((r): r is Rule & { alert: string } => !!r.alert);

let promtool = '';
beforeAll(() => {
  promtool = prometheusBinary('promtool');
});

describe('edgemesh.rules.yaml with promtool', () => {
  it('passes promtool check rules', async () => {
    const r = await runTool(promtool, ['check', 'rules', rulesFile]);
    expect(r.output).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(r.code, r.output).toBe(0);
  });

  it.each(testFiles)('tests/%s passes promtool test rules', async (file) => {
    // From its own directory: rule_files are relative to the test file.
    const r = await runTool(promtool, ['test', 'rules', file], { cwd: testsDir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('SUCCESS');
  });

  it('every alert has a case where it fires and one where it does not', () => {
    const seen = new Map<string, { fires: number; quiet: number }>();
    for (const file of testFiles) {
      const doc = YAML.parse(readFileSync(join(testsDir, file), 'utf8')) as {
        rule_files: string[];
        tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
      };
      expect(doc.rule_files, file).toEqual(['../edgemesh.rules.yaml']);
      for (const t of doc.tests)
        for (const a of t.alert_rule_test ?? []) {
          const s = seen.get(a.alertname) ?? { fires: 0, quiet: 0 };
          if ((a.exp_alerts ?? []).length > 0) s.fires++;
          else s.quiet++;
          seen.set(a.alertname, s);
        }
    }
    const missing = alerts
      .map((a) => ({ alert: a.alert, ...(seen.get(a.alert) ?? { fires: 0, quiet: 0 }) }))
      .filter((s) => s.fires === 0 || s.quiet === 0);
    expect(missing).toEqual([]);
    // And no case names an alert that does not exist (a rename would leave it testing nothing).
    expect([...seen.keys()].filter((name) => !alerts.some((a) => a.alert === name))).toEqual([]);
  });
});

describe('edgemesh.rules.yaml contents', () => {
  it('alert names are unique, with a severity, a summary, a description and a runbook hint', () => {
    expect(new Set(alerts.map((a) => a.alert)).size).toBe(alerts.length);
    for (const a of alerts) {
      expect(['critical', 'warning'], a.alert).toContain(a.labels?.severity);
      expect(Object.keys(a.annotations ?? {}).sort(), a.alert).toEqual(['description', 'runbook', 'summary']);
      expect(a.annotations?.runbook, a.alert).toBe(`README.md, Monitoring, Alerts (${a.alert})`);
    }
  });

  it("the README's Monitoring section lists every alert under Alerts", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const start = readme.indexOf('\n### Monitoring\n');
    expect(start, 'README.md has a "### Monitoring" section').toBeGreaterThan(0);
    const alertsAt = readme.indexOf('\n#### Alerts\n', start);
    expect(alertsAt, 'README.md Monitoring has an "#### Alerts" part').toBeGreaterThan(start);
    // Up to the next section of any level.
    const part = readme.slice(alertsAt + 1).split(/\n#{2,4} /)[0];
    const listed = [...part.matchAll(/^\| `(Edgemesh\w+)` \|/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual(alerts.map((a) => a.alert).sort());
  });
});

describe('copies of the rules', () => {
  const rules = readFileSync(rulesFile, 'utf8');
  const copies = [
    { path: join(dir, 'prometheus-rule.yaml'), text: prometheusRuleText(rules) },
    { path: join(root, 'charts/edgemesh/files/edgemesh.rules.yaml'), text: rules },
  ];
  it.each(copies.map((c) => [c.path.slice(root.length + 1), c] as const))(
    '%s is derived from edgemesh.rules.yaml (REFRESH_GOLDEN=1 rewrites it)',
    (_name, { path, text }) => {
      if (process.env.REFRESH_GOLDEN === '1') writeFileSync(path, text);
      expect(readFileSync(path, 'utf8')).toBe(text);
    },
  );

  it('prometheus-rule.yaml holds the same groups as a PrometheusRule', () => {
    const rule = YAML.parse(readFileSync(join(dir, 'prometheus-rule.yaml'), 'utf8'));
    expect(rule).toMatchObject({ apiVersion: 'monitoring.coreos.com/v1', kind: 'PrometheusRule' });
    expect(rule.spec).toEqual({ groups });
  });
});
