// The campaign's figures, one row per store, as a Markdown table (the form
// docs/GUARANTEES.md keeps them in).
import type { Verdict } from './checker';

export interface StoreResult {
  store: string;
  seconds: number;
  seed: number;
  faults: Map<string, number>;
  boundS: number;
  verdict: Verdict;
}

export function faultSummary(faults: Map<string, number>): string {
  return [...faults.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
}

export function table(results: StoreResult[]): string {
  const rows = [
    '| store | seconds | sections (accepted) | faults by kind | violations | fenced overlaps (refused sections) | history gaps in faults | worst wait after a fault (bound) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    const v = r.verdict;
    const worst = `${(v.worstRecoveryMs / 1000).toFixed(1)} s${v.worstRecoveryName ? ` (${v.worstRecoveryName})` : ''}`;
    rows.push(
      `| ${r.store} | ${r.seconds} | ${v.sections} (${v.accepted}) | ${faultSummary(r.faults)} | ${v.violations.length} | ${v.fencedOverlaps} (${v.refused}) | ${v.historyGaps} | ${worst} (${r.boundS} s) |`,
    );
  }
  return rows.join('\n');
}
