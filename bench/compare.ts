// The figures of a benchmark run against the committed baseline
// (bench/baseline.json): each figure's ratio to its anchor, measured in the
// same run, is compared with the baseline's ratio, and a figure whose ratio
// moved by more than its run-to-run spread is flagged, worse or better.
// The baseline is written by `make bench-baseline` from several runs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Row {
  goal: string;
  what: string;
  figure?: number;
  anchor?: number;
  anchorWhat?: string;
  unit?: string;
  ratio?: number;
  target: string;
  met?: boolean;
  info?: boolean;
  skipped?: boolean;
  smoke?: boolean;
}

export interface BaselineFigure {
  what: string;
  unit: string;
  better: 'lower' | 'higher';
  ratio: number; // the median of the runs' ratios
  spread: number; // relative: a ratio within ratio × (1 ± spread) has not moved
  runs: number[]; // each run's ratio
  figure: number; // the median of the runs' figures, for reading
}

export interface Baseline {
  machine: string;
  measured: string;
  command: string;
  figures: Record<string, BaselineFigure>;
}

export const BASELINE = join(__dirname, '..', '..', 'bench', 'baseline.json');
// Three runs do not show a figure's tails: no spread is taken as narrower than this.
export const MIN_SPREAD = 0.05;
// A figure measured in one run only has no spread to go by: this wide one stands in.
export const ONE_RUN_SPREAD = 0.3;

export function parseRows(text: string): Row[] {
  const rows: Row[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('BENCH ')) continue;
    try {
      rows.push(JSON.parse(line.slice(6)));
    } catch {
      /* not ours */
    }
  }
  return rows;
}

// A name for each row that is the same in every run: its goal, and where a
// goal has several rows (3a's p50 and p99), the quantile its text names or its place.
export function keys(rows: Row[]): string[] {
  const count = new Map<string, number>();
  for (const r of rows) count.set(r.goal, (count.get(r.goal) ?? 0) + 1);
  const seen = new Map<string, number>();
  return rows.map((r) => {
    const n = (seen.get(r.goal) ?? 0) + 1;
    seen.set(r.goal, n);
    if (count.get(r.goal) === 1) return r.goal;
    const q = /\b(p\d+)\b/.exec(r.what)?.[1];
    return q ? `${r.goal} ${q}` : `${r.goal} #${n}`;
  });
}

const betterOf = (unit: string | undefined): 'lower' | 'higher' => (unit?.endsWith('/s') ? 'higher' : 'lower');
const medianOf = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const measured = (r: Row) => !r.skipped && !r.smoke && Number.isFinite(r.ratio) && (r.ratio ?? 0) > 0;

// The baseline of several runs' rows: per figure the median ratio and the
// largest relative distance of any run's ratio from it (at least MIN_SPREAD;
// ONE_RUN_SPREAD for a figure that only one run measured).
export function makeBaseline(runs: Row[][], meta: Omit<Baseline, 'figures'>): Baseline {
  const byKey = new Map<string, Row[]>();
  for (const rows of runs) {
    const ks = keys(rows);
    rows.forEach((r, i) => {
      if (measured(r)) byKey.set(ks[i]!, [...(byKey.get(ks[i]!) ?? []), r]);
    });
  }
  const figures: Record<string, BaselineFigure> = {};
  for (const [key, rs] of byKey) {
    const ratios = rs.map((r) => r.ratio!);
    const ratio = round(medianOf(ratios));
    const spread =
      ratios.length < 2 ? ONE_RUN_SPREAD : Math.max(MIN_SPREAD, ...ratios.map((x) => Math.abs(x / ratio - 1)));
    figures[key] = {
      what: rs[0]!.what,
      unit: rs[0]!.unit ?? '',
      better: betterOf(rs[0]!.unit),
      ratio: round(ratio),
      spread: Math.ceil(spread * 100) / 100, // rounded up to a whole per cent: no run of its own lies outside it
      runs: ratios.map(round),
      figure: round(medianOf(rs.map((r) => r.figure ?? NaN))),
    };
  }
  return { ...meta, figures };
}

const round = (x: number) => Number(x.toPrecision(4));

export type Verdict = 'worse' | 'better' | 'within' | 'new';

export interface Comparison {
  key: string;
  verdict: Verdict;
  ratio: number;
  base?: BaselineFigure;
  change?: number; // relative change of the ratio against the baseline's
}

export function compare(rows: Row[], baseline: Baseline): Comparison[] {
  const ks = keys(rows);
  const out: Comparison[] = [];
  rows.forEach((r, i) => {
    if (!measured(r)) return;
    const key = ks[i]!;
    const base = baseline.figures[key];
    const ratio = r.ratio!;
    if (!base) {
      out.push({ key, verdict: 'new', ratio });
      return;
    }
    const change = ratio / base.ratio - 1;
    const moved = Math.abs(change) > base.spread;
    const up = change > 0;
    const verdict: Verdict = !moved ? 'within' : up === (base.better === 'higher') ? 'better' : 'worse';
    out.push({ key, verdict, ratio, base, change });
  });
  return out;
}

const pct = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(0)} %`;

// One flag line per figure that moved or is not in the baseline, then one summary line.
export function flagLines(cmp: Comparison[], baseline: Baseline, source: string): string[] {
  const lines: string[] = [];
  for (const c of cmp) {
    if (c.verdict === 'within') continue;
    if (c.verdict === 'new' || !c.base) {
      lines.push(`FLAG ${c.key}: ratio ${c.ratio.toFixed(3)}×, not in the baseline`);
      continue;
    }
    lines.push(
      `FLAG ${c.key}: ${c.verdict.toUpperCase()}: ratio ${c.ratio.toFixed(3)}× against ${c.base.ratio.toFixed(3)}× ` +
        `± ${(c.base.spread * 100).toFixed(0)} % (${pct(c.change!)}; ${c.base.better} is better): ${c.base.what}`,
    );
  }
  const seen = new Set(cmp.map((c) => c.key));
  const missing = Object.keys(baseline.figures).filter((k) => !seen.has(k));
  const n = (v: Verdict) => cmp.filter((c) => c.verdict === v).length;
  lines.push(
    `against ${source}: ${n('worse')} worse, ${n('better')} better, ${n('within')} within their spread` +
      (n('new') ? `, ${n('new')} not in the baseline` : '') +
      (missing.length ? `, ${missing.length} of the baseline not measured (${missing.join(', ')})` : ''),
  );
  return lines;
}

export function readBaseline(path: string): Baseline {
  return JSON.parse(readFileSync(path, 'utf8')) as Baseline;
}
