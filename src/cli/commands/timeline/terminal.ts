// The timeline on a terminal: a row of cells per lock, each cell the letter
// of the run holding the lock then; then what the glyphs mean, who each run
// is, who waited for whom, and the timeouts, deadlocks, breaks and lost holds.
import { clock, ellipsize, seconds, tickLabel, tickStep } from './format';
import type { Bar } from './model';
import { glyphs, stillOpen, type Timeline } from './timeline';
import { describeMark, runTable } from './words';

export const FREE = '·';
export const SHARED = '+';
export const UNSEEN = '~';
const MAX_LABEL = 24;

function paint(text: string, hex: string | undefined, colour: boolean): string {
  if (!colour || !hex) return text;
  const n = parseInt(hex.slice(1), 16);
  return `\x1b[1;38;2;${(n >> 16) & 255};${(n >> 8) & 255};${n & 255}m${text}\x1b[0m`;
}

// One cell: the run holding the lock longest in it; several shared holders at
// once; someone waiting while no holder is recorded (a process outside
// hostlock, or a hold from before the records); or free.
function cell(holds: Bar[], waits: Bar[], a: number, z: number): Bar | typeof SHARED | typeof UNSEEN | typeof FREE {
  const inside = holds.filter((b) => b.start < z && b.end > a);
  if (!inside.length) return waits.some((w) => w.start < z && w.end > a) ? UNSEEN : FREE;
  const together = inside.some((x) => inside.some((y) => x !== y && x.start < y.end && y.start < x.end));
  if (together && inside.every((b) => b.mode === 'shared')) return SHARED;
  let best = inside[0]!;
  let most = 0;
  for (const b of inside) {
    const cover = Math.min(z, b.end) - Math.max(a, b.start);
    if (cover > most) [best, most] = [b, cover];
  }
  return best;
}

export function chart(tl: Timeline, width: number, colour = false): string {
  const span = tl.t1 - tl.t0;
  const step = span / width;
  const labelW = Math.min(MAX_LABEL, Math.max(4, ...tl.locks.map((l) => l.length)));
  const lines: string[] = [
    `time 0 = ${clock(tl.t0)}, the first event; ${tl.ongoing ? 'to now' : 'to the last event'}, ${seconds(span)} later`,
  ];
  for (const lock of tl.locks) {
    const holds = tl.bars.filter((b) => b.lock === lock && b.kind === 'hold');
    const waits = tl.bars.filter((b) => b.lock === lock && b.kind === 'wait');
    let cells = '';
    for (let c = 0; c < width; c++) {
      const got = cell(holds, waits, tl.t0 + c * step, tl.t0 + (c + 1) * step);
      if (typeof got === 'string') cells += got;
      else {
        const run = tl.run.get(got.run);
        cells += paint(run?.glyph ?? '?', run?.colour, colour);
      }
    }
    lines.push(`${ellipsize(lock, labelW).padStart(labelW)} │${cells}│`);
  }
  // The axis: a tick every round step, labelled where the label fits.
  const every = tickStep(span, Math.max(2, Math.floor(width / 10)));
  let axis = '';
  let marks = '';
  for (let c = 0; c < width; c++) {
    const t = Math.ceil((c * step) / every) * every;
    const tick = t < (c + 1) * step;
    axis += tick ? '┬' : '─';
    if (tick && marks.length <= c) marks = marks.padEnd(c) + tickLabel(t, every) + ' ';
  }
  lines.push(`${' '.repeat(labelW)} └${axis}┘`);
  lines.push(`${' '.repeat(labelW)}  ${marks.trimEnd()}`);
  return lines.join('\n');
}

// What the glyphs mean, then each run: letter, id, and who it is.
export function legend(tl: Timeline, colour = false, total = 120): string {
  const labelW = Math.max(...tl.runs.map((r) => r.label.length));
  const table = runTable(tl, total - labelW - 3, false);
  const lines = [
    `letter = the run holding the lock   ${SHARED} = several shared holders   ` +
      `${UNSEEN} = waited for, no holder recorded   ${FREE} = free`,
  ];
  for (const [i, r] of tl.runs.entries())
    lines.push(`  ${paint(r.label.padEnd(labelW), r.colour, colour)}  ${table[i]}`);
  return lines.join('\n');
}

// Per run: each wait, how long, for whom, and how it ended.
export function waitsText(tl: Timeline): string {
  const lines: string[] = [];
  for (const r of tl.runs) {
    const ws = tl.bars.filter((b) => b.run === r.id && b.kind === 'wait');
    if (!ws.length) continue;
    const parts = ws.map((w) => {
      const who = w.for.length ? ` for ${glyphs(tl, w.for)}` : '';
      const end = stillOpen(tl, w) ? ' (still waiting)' : w.outcome && w.outcome !== 'grant' ? ` (${w.outcome})` : '';
      return `${ellipsize(w.lock, MAX_LABEL)} ${seconds(w.end - w.start)}${who}${end}`;
    });
    lines.push(`  ${r.label} ${r.id}: ${parts.join('; ')}`);
  }
  return lines.join('\n');
}

export function marksText(tl: Timeline): string {
  return tl.marks.map((m) => `  ${describeMark(tl, m)}`).join('\n');
}
