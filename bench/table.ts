// Reads benchmark output (stdin) and prints the table of every `BENCH {json}`
// line: figure, anchor, ratio, goal, met?; then compares each ratio with the
// baseline (bench/baseline.json, or $HOSTLOCK_BENCH_BASELINE): a FLAG line for
// each figure that moved by more than its spread, and a summary line. Exit 0
// even when goals are unmet or figures moved: the table is the verdict; with
// BENCH_STRICT=1, exit 1 when a figure is worse than its baseline.
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { BASELINE, compare, flagLines, parseRows, readBaseline } from './compare';

const num = (x: number | undefined) =>
  x === undefined || !Number.isFinite(x)
    ? '-'
    : Math.abs(x) >= 100
      ? x.toFixed(0)
      : Math.abs(x) >= 10
        ? x.toFixed(1)
        : x.toFixed(3);

const rows = parseRows(readFileSync(0, 'utf8'));
const head = ['goal', 'figure', 'anchor', 'ratio', 'goal', 'met?', 'what (anchor)'];
const table = [head];
for (const r of rows) {
  table.push([
    r.goal,
    r.skipped ? 'skipped' : `${num(r.figure)} ${r.unit}`,
    r.skipped ? '-' : `${num(r.anchor)} ${r.unit}`,
    r.skipped ? '-' : `${(r.ratio ?? NaN).toFixed(2)}×`,
    r.target,
    r.skipped ? 'skipped' : r.info ? 'info' : r.met ? 'yes' : 'NO',
    `${r.what}${r.anchorWhat ? ` (${r.anchorWhat})` : ''}`,
  ]);
}
const width = head.map((_, i) => Math.max(...table.map((r) => r[i]?.length ?? 0)));
for (const r of table)
  process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i] ?? 0))).join('  ') + '\n');

const baselinePath = process.env.HOSTLOCK_BENCH_BASELINE || BASELINE;
if (rows.some((r) => r.smoke)) {
  process.stdout.write('smoke sizes: not compared with the baseline\n');
} else if (!existsSync(baselinePath)) {
  process.stdout.write(`no baseline at ${baselinePath}: not compared (make bench-baseline writes one)\n`);
} else {
  const baseline = readBaseline(baselinePath);
  const cmp = compare(rows, baseline);
  const name = relative(process.cwd(), baselinePath) || baselinePath;
  process.stdout.write('\n' + flagLines(cmp, baseline, name).join('\n') + '\n');
  if (process.env.BENCH_STRICT === '1' && cmp.some((c) => c.verdict === 'worse')) process.exitCode = 1;
}
