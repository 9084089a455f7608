import { readFileSync } from 'node:fs';

/**
 * Test-only: the PromQL of manifests/monitoring/grafana-dashboard.json, each query with its
 * panel, and Grafana's own variables replaced by what Grafana would put there, so the
 * result is plain PromQL that promtool and Prometheus take.
 */
export interface DashboardQuery {
  panel: string;
  refId: string;
  /** As written in the dashboard. */
  raw: string;
  /** With Grafana's variables replaced. */
  expr: string;
}

interface Panel {
  type: string;
  title: string;
  panels?: Panel[];
  targets?: { refId: string; expr?: string }[];
}

/** Grafana's interval variables, as Grafana fills them in for a 30 s scrape interval. */
export const GRAFANA_VARIABLES: Record<string, string> = {
  $__rate_interval: '2m',
  $__interval: '30s',
  $__range: '6h',
};

export function dashboardPanels(path: string): Panel[] {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { panels: Panel[] };
  return doc.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

export function dashboardQueries(path: string): DashboardQuery[] {
  return dashboardPanels(path).flatMap((p) =>
    (p.targets ?? []).map((t) => {
      const raw = t.expr ?? '';
      let expr = raw;
      for (const [name, value] of Object.entries(GRAFANA_VARIABLES)) expr = expr.split(name).join(value);
      return { panel: p.title, refId: t.refId, raw, expr };
    }),
  );
}
