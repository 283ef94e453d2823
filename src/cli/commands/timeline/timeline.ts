// What a timeline shows, for both drawings: one row per lock, the runs with
// their letters and colours, and the time across, from the first event read
// to the last (or to now while something is still held or waited for).
import type { HistoryRecord } from '../../../store/types';
import { readHistory, type Bar, type Mark } from './model';
import { runsOf, type Run } from './runs';

export interface Timeline {
  locks: string[];
  runs: Run[];
  run: Map<string, Run>;
  bars: Bar[];
  marks: Mark[];
  t0: number;
  t1: number;
  ongoing: boolean; // something is still held or waited for at t1 (now)
}

function natural(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true });
}

export function buildTimeline(records: HistoryRecord[], now = Date.now()): Timeline {
  const times = records.map((r) => Date.parse(r.t));
  const NOW = Number.MAX_SAFE_INTEGER; // "no end yet", until the window's end is known
  const { bars, marks } = readHistory(records, NOW);
  const ongoing = bars.some((b) => b.end === NOW);
  const t0 = times.length ? Math.min(...times) : now;
  const t1 = Math.max(ongoing ? now : times.length ? Math.max(...times) : now, t0 + 1);
  for (const b of bars) if (b.end === NOW) b.end = t1;
  const runs = runsOf(records);
  return {
    locks: [...new Set([...bars.map((b) => b.lock), ...marks.map((m) => m.lock)])].sort(natural),
    runs,
    run: new Map(runs.map((r) => [r.id, r])),
    bars,
    marks,
    t0,
    t1,
    ongoing,
  };
}

// Whether a bar reaches the window's end with no end recorded: still held or waiting.
export const stillOpen = (tl: Timeline, b: Bar) => b.open && b.end >= tl.t1 && tl.ongoing;

// The letters of runs (a wait's "for"), as one string: a long list by its
// first and last few, with how many there were.
export function glyphs(tl: Timeline, ids: string[], most = 8): string {
  const all = ids.map((id) => tl.run.get(id)?.label ?? id);
  if (all.length <= most) return all.join(', ');
  return `${all.slice(0, 3).join(', ')} … ${all.slice(-2).join(', ')} (${all.length} runs)`;
}
