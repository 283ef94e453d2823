// Reads benchmark output (stdin) and prints the table of every `BENCH {json}`
// line: figure, anchor, ratio, goal, met?. Exit 0 even when goals are unmet:
// the table is the verdict.
import { readFileSync } from 'node:fs';

interface Row {
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
}

const num = (x: number | undefined) =>
  x === undefined || !Number.isFinite(x)
    ? '-'
    : Math.abs(x) >= 100
      ? x.toFixed(0)
      : Math.abs(x) >= 10
        ? x.toFixed(1)
        : x.toFixed(3);

const rows: Row[] = [];
for (const line of readFileSync(0, 'utf8').split('\n')) {
  if (line.startsWith('BENCH ')) {
    try {
      rows.push(JSON.parse(line.slice(6)));
    } catch {
      /* not ours */
    }
  }
}
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
