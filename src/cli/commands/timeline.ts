// `hostlock timeline`: who held which lock when, and who waited for whom,
// drawn from the history of a lock directory, on the terminal and as SVG.
import { accessSync, constants, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { HistoryRecord } from '../../store/types';
import { UsageError } from '../exit';
import { backendOption, queryHistory, SINCE_FORMS } from './history';

export interface Bar {
  lock: string;
  run: string;
  kind: 'hold' | 'wait';
  start: number; // ms since the epoch
  end: number;
  open: boolean; // no end in the history: drawn to the window's edge or the next holder
  mode?: string;
  token?: number;
  task?: string;
  host?: string;
  outcome?: string; // waits: grant, timeout, cancel, deadlock
  for: string[]; // waits: the runs that held the lock meanwhile
}

export const GLYPHS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const PALETTE = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];

const runOf = (r: HistoryRecord) => r.run ?? `pid ${r.pid ?? '?'}`;

// Holds (grant to release, lost or break, matched by token) and waits (wait
// to its outcome, matched by wait id). An exclusive grant means every earlier
// holder of the lock is gone: their bars end there. Their releases may be
// stamped a moment later (the releaser writes its line after the grant it
// enabled) and still count as releases. A holder killed outright leaves none.
export function bars(records: HistoryRecord[], until: number): Bar[] {
  const out: Bar[] = [];
  const holds = new Map<string, Bar>();
  const waits = new Map<string, Bar>();
  const endedByGrant = new Map<string, Bar>();
  const holdKey = (r: HistoryRecord) => `${r.path}\0${r.token}`;
  for (const r of records) {
    const t = Date.parse(r.t);
    const lock = r.name ?? r.path;
    switch (r.event) {
      case 'wait':
        if (r.wait) {
          const b: Bar = {
            lock,
            run: runOf(r),
            kind: 'wait',
            start: t,
            end: until,
            open: true,
            mode: r.mode,
            task: r.task,
            host: r.host,
            for: [],
          };
          waits.set(`${r.path}\0${r.wait}`, b);
          out.push(b);
        }
        break;
      case 'grant': {
        if (r.mode !== 'shared') {
          // Whatever still looks held has ended by now (a holder killed outright).
          for (const [k, h] of holds) {
            if (h.lock === lock && h.open) {
              h.end = t;
              holds.delete(k);
              endedByGrant.set(k, h);
            }
          }
        }
        const b: Bar = {
          lock,
          run: runOf(r),
          kind: 'hold',
          start: t,
          end: until,
          open: true,
          mode: r.mode,
          token: r.token,
          task: r.task,
          host: r.host,
          for: [],
        };
        holds.set(holdKey(r), b);
        out.push(b);
        // A wait too short to be recorded on its own is known from the grant.
        if (!(r.wait && closeWait(waits, r, t, 'grant')) && (r.waited ?? 0) >= 0.02) {
          out.push({
            lock,
            run: b.run,
            kind: 'wait',
            start: t - r.waited! * 1000,
            end: t,
            open: false,
            mode: r.mode,
            task: r.task,
            host: r.host,
            outcome: 'grant',
            for: [],
          });
        }
        break;
      }
      case 'release':
      case 'lost':
      case 'break': {
        const k = holdKey(r);
        const h = holds.get(k);
        if (h) {
          h.end = t;
          h.open = false;
          holds.delete(k);
        }
        const ended = endedByGrant.get(k);
        if (ended) {
          // Its end stays at the grant that followed: the two never overlapped.
          ended.open = false;
          endedByGrant.delete(k);
        }
        break;
      }
      case 'timeout':
      case 'cancel':
      case 'deadlock':
        closeWait(waits, r, t, r.event);
        break;
    }
  }
  // Who each wait waited for: the other runs holding that lock meanwhile.
  const held = out.filter((b) => b.kind === 'hold');
  for (const w of out) {
    if (w.kind !== 'wait') continue;
    for (const h of held) {
      if (h.lock === w.lock && h.run !== w.run && h.start < w.end && h.end > w.start && !w.for.includes(h.run))
        w.for.push(h.run);
    }
  }
  return out;
}

function closeWait(waits: Map<string, Bar>, r: HistoryRecord, t: number, outcome: string): boolean {
  const k = `${r.path}\0${r.wait}`;
  const w = waits.get(k);
  if (!w) return false;
  w.end = t;
  w.open = false;
  w.outcome = outcome;
  waits.delete(k);
  return true;
}

function natural(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true });
}

export class Timeline {
  readonly locks: string[];
  readonly runs: string[];
  readonly glyph = new Map<string, string>();
  readonly colour = new Map<string, string>();

  constructor(
    readonly bars: Bar[],
    readonly t0: number,
    readonly t1: number,
  ) {
    this.locks = [...new Set(bars.map((b) => b.lock))].sort(natural);
    const first = new Map<string, number>();
    for (const b of bars) first.set(b.run, Math.min(first.get(b.run) ?? Infinity, b.start));
    this.runs = [...first.keys()].sort((a, b) => first.get(a)! - first.get(b)! || natural(a, b));
    this.runs.forEach((r, i) => {
      this.glyph.set(r, GLYPHS.charAt(i % GLYPHS.length));
      this.colour.set(r, PALETTE[i % PALETTE.length]!);
    });
  }

  terminal(width: number): string {
    const span = Math.max(this.t1 - this.t0, 1);
    const step = span / width;
    const labelW = Math.max(4, ...this.locks.map((l) => l.length));
    const lines: string[] = [];
    for (const lock of this.locks) {
      const row = this.bars.filter((b) => b.lock === lock && b.kind === 'hold');
      let cells = '';
      for (let c = 0; c < width; c++) {
        const a = this.t0 + c * step;
        const z = a + step;
        let best: Bar | undefined;
        let most = 0;
        for (const b of row) {
          const cover = Math.min(z, b.end) - Math.max(a, b.start);
          if (cover > most) [best, most] = [b, cover];
        }
        cells += best ? this.glyph.get(best.run)! : '·';
      }
      lines.push(`${lock.padStart(labelW)} │${cells}│`);
    }
    const ticks = Math.max(8, Math.floor(width / 8));
    let axis = '';
    let marks = '';
    for (let c = 0; c < width; c++) axis += c % ticks === 0 ? '┬' : '─';
    for (let c = 0; c < width; c += ticks)
      marks = marks.padEnd(c) + `${((c * step) / 1000).toFixed(span < 2000 ? 2 : 1)}s`;
    lines.push(`${' '.repeat(labelW)} └${axis}┘`);
    lines.push(`${' '.repeat(labelW)}  ${marks.slice(0, width + 8)}`);
    lines.push(this.runs.map((r) => `${this.glyph.get(r)} = ${r}`).join('   '));
    return lines.join('\n');
  }

  // Per run: each wait, how long, for whom, and how it ended.
  waitsText(): string {
    const lines: string[] = [];
    for (const r of this.runs) {
      const ws = this.bars.filter((b) => b.run === r && b.kind === 'wait');
      if (!ws.length) continue;
      const parts = ws.map((w) => {
        const who = w.for.map((f) => this.glyph.get(f) ?? f).join(', ') || '?';
        const end = w.open ? ' (still waiting)' : w.outcome && w.outcome !== 'grant' ? ` (${w.outcome})` : '';
        return `${w.lock} ${((w.end - w.start) / 1000).toFixed(1)}s for ${who}${end}`;
      });
      lines.push(`  ${this.glyph.get(r)} ${r}: ${parts.join('; ')}`);
    }
    return lines.join('\n');
  }

  svg(title: string): string {
    const left = 110;
    const right = 20;
    const top = 50;
    const rowH = 34;
    const gap = 8;
    const width = 1000;
    const plotW = width - left - right;
    const span = Math.max(this.t1 - this.t0, 1);
    const x = (t: number) => left + ((t - this.t0) / span) * plotW;
    const rowsH = this.locks.length * (rowH + gap);
    const waitRuns = this.runs.filter((r) => this.bars.some((b) => b.run === r && b.kind === 'wait'));
    const legendY = top + rowsH + 50;
    const height = legendY + 22 * (this.runs.length + waitRuns.length + 2) + 20;
    const out = [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="monospace" font-size="13">`,
      `<rect width="${width}" height="${height}" fill="white"/>`,
      `<text x="${left}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`,
    ];
    const secs = span / 1000;
    const tick = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, Infinity].find(
      (t) => secs / t <= 12,
    )!;
    for (let t = 0; t <= secs + 1e-9 && Number.isFinite(tick); t += tick) {
      const gx = left + (t / secs) * plotW;
      out.push(`<line x1="${gx.toFixed(1)}" y1="${top - 6}" x2="${gx.toFixed(1)}" y2="${top + rowsH}" stroke="#ddd"/>`);
      out.push(
        `<text x="${gx.toFixed(1)}" y="${top + rowsH + 18}" text-anchor="middle" fill="#555">${+t.toFixed(1)}s</text>`,
      );
    }
    for (const [i, lock] of this.locks.entries()) {
      const y = top + i * (rowH + gap);
      out.push(`<text x="${left - 10}" y="${y + rowH / 2 + 5}" text-anchor="end">${esc(lock)}</text>`);
      out.push(`<rect x="${left}" y="${y}" width="${plotW}" height="${rowH}" fill="#f6f6f6"/>`);
      // Holds in the upper part (a lane each when shared holders overlap), waits in the lower strip.
      const holds = this.bars.filter((b) => b.lock === lock && b.kind === 'hold').sort((a, b) => a.start - b.start);
      const lanes: number[] = [];
      const lane = new Map<Bar, number>();
      for (const b of holds) {
        let l = lanes.findIndex((end) => end <= b.start);
        if (l < 0) l = lanes.length;
        lanes[l] = b.end;
        lane.set(b, l);
      }
      const holdH = rowH * 0.62;
      const laneH = holdH / Math.max(lanes.length, 1);
      for (const b of holds) {
        const x0 = x(b.start);
        const x1 = x(b.end);
        const ly = y + 2 + lane.get(b)! * laneH;
        const tip = `${b.run} held ${b.lock}${b.mode === 'shared' ? ' (shared)' : ''}${b.token !== undefined ? `, token ${b.token}` : ''}: ${this.at(b.start)} to ${this.at(b.end)}${b.open ? ' (no release recorded)' : ''}${b.task ? `, task ${b.task}` : ''}`;
        out.push(
          `<rect x="${x0.toFixed(1)}" y="${ly.toFixed(1)}" width="${Math.max(x1 - x0, 1).toFixed(1)}" height="${(laneH - 1).toFixed(1)}" fill="${this.colour.get(b.run)}" stroke="white" rx="3"${b.open ? ' fill-opacity="0.6"' : ''}><title>${esc(tip)}</title></rect>`,
        );
        if (x1 - x0 > 12 && laneH >= 12)
          out.push(
            `<text x="${((x0 + x1) / 2).toFixed(1)}" y="${(ly + laneH / 2 + 4).toFixed(1)}" text-anchor="middle" fill="white" font-weight="bold">${esc(this.glyph.get(b.run)!)}</text>`,
          );
      }
      const waits = this.bars.filter((b) => b.lock === lock && b.kind === 'wait');
      const wy = y + holdH + 4;
      const wh = (rowH - holdH - 6) / Math.max(1, Math.min(waits.length, 4));
      for (const [k, w] of waits.entries()) {
        const x0 = x(w.start);
        const x1 = x(w.end);
        const tip = `${w.run} waited for ${w.lock} ${((w.end - w.start) / 1000).toFixed(2)}s, for ${w.for.join(', ') || '?'}${w.outcome && w.outcome !== 'grant' ? ` (${w.outcome})` : ''}`;
        const colour = w.outcome === 'deadlock' || w.outcome === 'timeout' ? 'red' : this.colour.get(w.run);
        out.push(
          `<rect x="${x0.toFixed(1)}" y="${(wy + (k % 4) * wh).toFixed(1)}" width="${Math.max(x1 - x0, 1).toFixed(1)}" height="${Math.max(wh - 1, 1).toFixed(1)}" fill="none" stroke="${colour}" stroke-dasharray="3,2"><title>${esc(tip)}</title></rect>`,
        );
      }
    }
    out.push(`<text x="${left}" y="${legendY}" font-weight="bold">runs (solid: holds; dashed: waits)</text>`);
    for (const [i, r] of this.runs.entries()) {
      const y = legendY + 22 * (i + 1);
      out.push(`<rect x="${left}" y="${y - 13}" width="16" height="16" fill="${this.colour.get(r)}" rx="3"/>`);
      out.push(`<text x="${left + 22}" y="${y}">${esc(`${this.glyph.get(r)} ${r}`)}</text>`);
    }
    const waitLines = this.waitsText().split('\n').filter(Boolean);
    const wy0 = legendY + 22 * (this.runs.length + 2);
    out.push(`<text x="${left}" y="${wy0}" font-weight="bold">who waited for whom</text>`);
    for (const [i, l] of waitLines.entries())
      out.push(`<text x="${left}" y="${wy0 + 22 * (i + 1)}" xml:space="preserve">${esc(l)}</text>`);
    out.push('</svg>');
    return out.join('\n');
  }

  private at(t: number): string {
    return `${((t - this.t0) / 1000).toFixed(2)}s`;
  }
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function buildTimeline(records: HistoryRecord[], from: number | null, now = Date.now()): Timeline {
  const times = records.map((r) => Date.parse(r.t));
  const all = bars(records, now);
  const open = all.some((b) => b.open);
  const t0 = from ?? (times.length ? Math.min(...times) : now);
  const t1 = open ? now : times.length ? Math.max(...times) : now;
  for (const b of all) if (b.open) b.end = Math.min(b.end, t1);
  return new Timeline(all, t0, Math.max(t1, t0 + 1));
}

// Where the SVG goes is checked before anything is read or drawn.
function checkSvgPath(path: string): void {
  if (path === '') throw new UsageError('--svg needs a file name');
  const folder = dirname(resolve(path));
  const found = statSync(folder, { throwIfNoEntry: false });
  if (!found)
    throw new UsageError(`--svg ${path}: directory ${folder} does not exist; create it or write the SVG elsewhere`);
  if (!found.isDirectory()) throw new UsageError(`--svg ${path}: ${folder} is not a directory`);
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory())
    throw new UsageError(`--svg ${path} is a directory: give a file name in it`);
  try {
    accessSync(folder, constants.W_OK);
  } catch {
    throw new UsageError(`--svg ${path}: directory ${folder} is not writable; write the SVG elsewhere`);
  }
}

interface Args {
  dir?: string;
  backend?: string;
  since?: string;
  svg?: string;
  width?: number;
}

export const timelineCommand: CommandModule<object, Args> = {
  command: 'timeline',
  describe: 'draw who held which lock when, and who waited for whom, from the history',
  builder: (y: Argv) =>
    y
      .option('dir', { type: 'string', describe: 'lock directory' })
      .option('backend', backendOption)
      .option('since', { type: 'string', describe: `from: ${SINCE_FORMS} (default: all)` })
      .option('svg', { type: 'string', describe: 'also write the timeline as SVG to this file' })
      .option('width', { type: 'number', describe: 'columns of the terminal chart' }),
  handler: async (a) => {
    if (a.svg !== undefined) checkSvgPath(a.svg);
    const { dir, from, records } = await queryHistory(a);
    const tl = buildTimeline(records, from);
    const width = a.width ?? Math.max(40, Math.min(110, (process.stdout.columns || 100) - 20));
    if (!tl.locks.length) process.stdout.write(`no history in ${dir}${a.since ? ` since ${a.since}` : ''}\n`);
    else {
      process.stdout.write(tl.terminal(width) + '\n');
      const w = tl.waitsText();
      if (w) process.stdout.write(`who waited for whom:\n${w}\n`);
    }
    if (a.svg) {
      writeFileSync(a.svg, tl.svg(`hostlock: ${tl.runs.length} runs, ${tl.locks.length} locks (${dir})`));
      process.stdout.write(`SVG timeline: ${a.svg}\n`);
    }
    process.exitCode = 0;
  },
};
