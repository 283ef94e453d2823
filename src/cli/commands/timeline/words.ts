// What both drawings say in words: who each run is (a table, one run a line)
// and the timeouts, deadlocks, breaks and lost holds as sentences.
import { columnWidths, seconds, tableRows } from './format';
import type { Mark } from './model';
import { fields, type Run } from './runs';
import type { Timeline } from './timeline';

// A run's holds and waits in numbers.
export function summary(tl: Timeline, r: Run): string {
  const mine = tl.bars.filter((b) => b.run === r.id);
  const holds = mine.filter((b) => b.kind === 'hold');
  const waits = mine.filter((b) => b.kind === 'wait');
  const held = holds.reduce((s, b) => s + b.end - b.start, 0);
  const longest = waits.reduce((m, b) => Math.max(m, b.end - b.start), 0);
  return [
    holds.length ? `held ${holds.length}× ${seconds(held)}` : '',
    waits.length ? `longest wait ${seconds(longest)}` : '',
  ]
    .filter(Boolean)
    .join(', ');
}

// One line per run (in the runs' order): id, playbook, task(s), user@controller,
// pid and, if asked, its numbers; in columns, cut to `total` characters.
export function runTable(tl: Timeline, total: number, withSummary: boolean): string[] {
  const rows = tl.runs.map((r) => {
    const f = fields(r);
    return [r.id, f.playbook, f.tasks, f.who, f.pid, withSummary ? summary(tl, r) : ''];
  });
  // Narrowed first: the numbers, then the playbook and the tasks, who, the run id.
  const widths = columnWidths(rows, total, [
    [5, 0],
    [1, 18],
    [2, 12],
    [1, 8],
    [2, 6],
    [3, 8],
    [0, 6],
  ]);
  return tableRows(rows, widths);
}

const WHAT: Record<Mark['kind'], string> = {
  timeout: 'timed out waiting',
  deadlock: 'refused: deadlock',
  cancel: 'stopped waiting',
  break: 'hold broken',
  lost: 'hold lost',
};

// A mark as a sentence: when, which lock, what happened to whom.
export function describeMark(tl: Timeline, m: Mark): string {
  const run = tl.run.get(m.run);
  const by = m.by ? ` by ${tl.run.get(m.by)?.label ?? ''} ${m.by}` : '';
  const waited = tl.bars.find((b) => b.kind === 'wait' && b.run === m.run && b.lock === m.lock && b.end === m.t);
  const after = waited && m.kind !== 'break' && m.kind !== 'lost' ? ` after ${seconds(waited.end - waited.start)}` : '';
  const whom = waited?.for.length ? ` for ${waited.for.map((f) => tl.run.get(f)?.label ?? f).join(', ')}` : '';
  return `${seconds(m.t - tl.t0).padStart(7)}  ${m.lock}  ${WHAT[m.kind]}: ${run?.label ?? ''} ${m.run}${by}${after}${whom}${m.reason ? ` (${m.reason})` : ''}`;
}
