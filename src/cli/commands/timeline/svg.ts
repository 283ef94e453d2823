// The timeline as an SVG picture for an incident report: a row per lock with
// its holds as bars labelled with their run, the waits beneath them naming
// whom they waited for, symbols where a wait timed out or was refused as a
// deadlock and where a hold was broken or lost; then the key, who each run
// is, and those events in words. Every shape has its details as a tooltip.
import { clock, ellipsize, seconds, tickLabel, tickStep } from './format';
import type { Bar, Mark, MarkKind } from './model';
import { textOn } from './palette';
import { identity, type Run } from './runs';
import { describeMark, runTable, summary } from './words';
import { glyphs, stillOpen, type Timeline } from './timeline';

const W = 1200;
const PAD = 16;
const CH = 7.23; // width of a character of the 12px monospace font
const SMALL = 6.02; // of the 10px one
const MAX_EVENTS = 40;

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const n = (v: number) => +v.toFixed(1);
const title = (s: string) => `<title>${esc(s)}</title>`;

// Bars in lanes, so that none overlaps another in its lane.
function lanes(bars: Bar[], pad: number): Map<Bar, number> {
  const ends: number[] = [];
  const lane = new Map<Bar, number>();
  for (const b of [...bars].sort((x, y) => x.start - y.start || x.end - y.end)) {
    let l = ends.findIndex((end) => end + pad <= b.start);
    if (l < 0) l = ends.length;
    ends[l] = b.end;
    lane.set(b, l);
  }
  return lane;
}

const count = (lane: Map<Bar, number>) => Math.max(0, ...[...lane.values()].map((l) => l + 1));

// The symbol of an event, centred on (x, y).
function symbol(kind: MarkKind, x: number, y: number, tip = ''): string {
  const t = tip ? title(tip) : '';
  switch (kind) {
    case 'timeout':
      return `<g stroke-linecap="round"><path d="M${n(x - 5)},${n(y - 5)}L${n(x + 5)},${n(y + 5)}M${n(x + 5)},${n(y - 5)}L${n(x - 5)},${n(y + 5)}" stroke="white" stroke-width="5"/><path d="M${n(x - 5)},${n(y - 5)}L${n(x + 5)},${n(y + 5)}M${n(x + 5)},${n(y - 5)}L${n(x - 5)},${n(y + 5)}" stroke="#d00000" stroke-width="2.5"/>${t}</g>`;
    case 'deadlock':
      return `<path d="M${n(x)},${n(y - 7)}L${n(x + 7)},${n(y)}L${n(x)},${n(y + 7)}L${n(x - 7)},${n(y)}Z" fill="#6a1b9a" stroke="white" stroke-width="1.5">${t}</path>`;
    case 'break':
      return `<path d="M${n(x - 6)},${n(y - 6)}L${n(x + 6)},${n(y - 6)}L${n(x)},${n(y + 5)}Z" fill="black" stroke="white" stroke-width="1.5">${t}</path>`;
    case 'lost':
      return `<circle cx="${n(x)}" cy="${n(y)}" r="5.5" fill="#ff8f00" stroke="black" stroke-width="1.5">${t}</circle>`;
    case 'cancel':
      return `<rect x="${n(x - 4)}" y="${n(y - 4)}" width="8" height="8" fill="#777" stroke="white" stroke-width="1.5">${t}</rect>`;
  }
}

const MEANING: [MarkKind, string][] = [
  ['timeout', 'timed out waiting'],
  ['deadlock', 'refused: deadlock'],
  ['break', 'hold broken (hostlock break)'],
  ['lost', 'hold lost'],
  ['cancel', 'stopped waiting'],
];

export function svg(tl: Timeline, heading: string, source: string): string {
  const span = tl.t1 - tl.t0;
  const labelChars = Math.min(28, Math.max(6, ...tl.locks.map((l) => l.length)));
  const left = PAD + labelChars * CH + 10;
  const plotW = W - left - PAD;
  const x = (t: number) => left + ((t - tl.t0) / span) * plotW;
  const at = (t: number) => seconds(t - tl.t0, 2);
  const backgrounds: string[] = []; // under the grid
  const body: string[] = [];
  const top = 78;

  // Rows: holds in lanes (shared holders beside each other), waits in lanes beneath.
  let y = top;
  const onTop: string[] = []; // symbols, drawn over every bar
  for (const [i, lock] of tl.locks.entries()) {
    const holds = tl.bars.filter((b) => b.lock === lock && b.kind === 'hold');
    const waits = tl.bars.filter((b) => b.lock === lock && b.kind === 'wait');
    const holdLane = lanes(holds, 0);
    const waitLane = lanes(waits, (3 * span) / plotW);
    const hl = Math.max(1, count(holdLane));
    const wl = count(waitLane);
    const holdLaneH = hl === 1 ? 22 : Math.max(8, 44 / hl);
    const waitLaneH = wl <= 3 ? 14 : Math.max(2.5, Math.min(8, 140 / wl));
    const holdY = y + 4;
    const waitY = holdY + hl * holdLaneH + 3;
    const rowH = 4 + hl * holdLaneH + (wl ? 3 + wl * waitLaneH : 0) + 4;
    backgrounds.push(
      `<rect x="${PAD}" y="${n(y)}" width="${W - 2 * PAD}" height="${n(rowH)}" fill="${i % 2 ? '#ffffff' : '#f3f4f6'}"/>`,
    );
    backgrounds.push(
      `<text x="${n(left - 10)}" y="${n(holdY + Math.min(hl * holdLaneH, 22) / 2 + 4)}" text-anchor="end" font-weight="bold">${esc(ellipsize(lock, labelChars))}${title(lock)}</text>`,
    );
    for (const b of holds) {
      const run = tl.run.get(b.run);
      const fill = run?.colour ?? '#888888';
      const x0 = x(b.start);
      const w = Math.max(x(b.end) - x0, 1.5);
      const by = holdY + holdLane.get(b)! * holdLaneH;
      const still = stillOpen(tl, b);
      const end = still
        ? ' (still held)'
        : b.open
          ? ' (no release recorded)'
          : b.outcome && b.outcome !== 'release'
            ? ` (${b.outcome})`
            : '';
      const tip =
        `${b.run} held ${b.lock}${b.mode === 'shared' ? ' (shared)' : ''}${b.token !== undefined ? `, token ${b.token}` : ''}: ` +
        `${b.before ? 'before the first record' : at(b.start)} to ${at(b.end)}${end}${b.task ? `, task ${b.task}` : ''}` +
        (run && identity(run) ? `; ${run.label} = ${identity(run)}` : '');
      const faded = b.open && !still ? ' fill-opacity="0.55" stroke-dasharray="3,2"' : '';
      body.push(
        `<rect x="${n(x0)}" y="${n(by)}" width="${n(w)}" height="${n(holdLaneH - 1)}" fill="${fill}" stroke="white" stroke-width="0.75" rx="2"${faded}>${title(tip)}</rect>`,
      );
      const label = run ? holdLabel(run, w, holdLaneH) : '';
      if (label)
        body.push(
          `<text x="${n(x0 + w / 2)}" y="${n(by + holdLaneH / 2 + label.size * 0.3)}" text-anchor="middle" fill="${textOn(fill)}" font-weight="bold"${label.size === 12 ? '' : ` font-size="${label.size}"`} pointer-events="none">${esc(label.text)}</text>`,
        );
    }
    for (const b of waits) {
      const run = tl.run.get(b.run);
      const colour = run?.colour ?? '#888888';
      const x0 = x(b.start);
      const w = Math.max(x(b.end) - x0, 1.5);
      const wy = waitY + waitLane.get(b)! * waitLaneH;
      const outcome = stillOpen(tl, b)
        ? ' (still waiting)'
        : b.outcome && b.outcome !== 'grant'
          ? ` (${b.outcome})`
          : '';
      const tip = `${b.run} waited for ${b.lock} ${((b.end - b.start) / 1000).toFixed(2)}s${b.for.length ? `, for ${b.for.join(', ')}` : ''}${outcome}`;
      body.push(
        `<rect x="${n(x0)}" y="${n(wy)}" width="${n(w)}" height="${n(Math.max(waitLaneH - 1, 1.5))}" fill="${colour}"${waitLaneH >= 8 ? ` fill-opacity="0.3" stroke="${colour}" stroke-dasharray="4,2"` : ' fill-opacity="0.7"'}>${title(tip)}</rect>`,
      );
      const text = `${run?.label ?? '?'} waits${b.for.length ? ` for ${glyphs(tl, b.for)}` : ''}`;
      // Thinner lanes: the waiting run's letter at the wait's start.
      if (waitLaneH >= 7 && waitLaneH < 12 && w > 2 * SMALL)
        body.push(
          `<text x="${n(x0 + 2)}" y="${n(wy + waitLaneH - 1.5)}" font-size="${n(waitLaneH)}" fill="#222" pointer-events="none">${esc(run?.label ?? '?')}</text>`,
        );
      if (waitLaneH >= 12 && w > 6 * SMALL)
        body.push(
          `<text x="${n(x0 + 3)}" y="${n(wy + waitLaneH / 2 + 3)}" font-size="10" fill="#222" pointer-events="none">${esc(ellipsize(text, Math.floor((w - 6) / SMALL)))}</text>`,
        );
      if (b.outcome === 'timeout' || b.outcome === 'deadlock' || b.outcome === 'cancel')
        onTop.push(
          symbol(b.outcome, x(b.end), wy + waitLaneH / 2, `${describeMark(tl, markOf(tl, b)).trim()}; ${tip}`),
        );
    }
    for (const m of tl.marks.filter((k) => k.lock === lock && (k.kind === 'break' || k.kind === 'lost')))
      onTop.push(
        symbol(m.kind, x(m.t), m.kind === 'break' ? holdY + 2 : holdY + holdLaneH / 2, describeMark(tl, m).trim()),
      );
    y += rowH;
  }
  const rowsEnd = y;
  body.push(...onTop);

  // The time axis, above the rows and (for tall charts) below them too.
  const grid: string[] = [];
  const step = tickStep(span, 12);
  for (let t = 0; t <= span; t += step) {
    const gx = n(x(tl.t0 + t));
    grid.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${n(rowsEnd)}" stroke="#d0d0d0" stroke-width="0.75"/>`);
    grid.push(`<text x="${gx}" y="${top - 8}" text-anchor="middle" fill="#555">${tickLabel(t, step)}</text>`);
    if (rowsEnd - top > 400)
      grid.push(`<text x="${gx}" y="${n(rowsEnd + 14)}" text-anchor="middle" fill="#555">${tickLabel(t, step)}</text>`);
  }
  if (tl.ongoing)
    grid.push(
      `<line x1="${n(x(tl.t1))}" y1="${top - 4}" x2="${n(x(tl.t1))}" y2="${n(rowsEnd)}" stroke="#333" stroke-dasharray="2,2"/><text x="${n(x(tl.t1))}" y="${n(rowsEnd + 14)}" text-anchor="end" fill="#333">now</text>`,
    );

  // The key: what each shape means.
  y = rowsEnd + (rowsEnd - top > 400 ? 38 : 30);
  const key: string[] = [];
  let kx = PAD;
  const item = (shape: string, text: string) => {
    key.push(shape, `<text x="${n(kx + 22)}" y="${n(y + 4)}">${esc(text)}</text>`);
    kx += 22 + text.length * CH + 18;
  };
  item(`<rect x="${kx}" y="${n(y - 8)}" width="18" height="14" fill="#5477a8" rx="2"/>`, 'held (letter = run)');
  item(
    `<rect x="${kx}" y="${n(y - 8)}" width="18" height="14" fill="#5477a8" fill-opacity="0.55" stroke="white" stroke-dasharray="3,2" rx="2"/>`,
    'no release in the history',
  );
  item(
    `<rect x="${kx}" y="${n(y - 5)}" width="18" height="9" fill="#5477a8" fill-opacity="0.3" stroke="#5477a8" stroke-dasharray="4,2"/>`,
    'waiting (for the runs named)',
  );
  y += 22;
  kx = PAD;
  for (const [kind, text] of MEANING) item(symbol(kind, kx + 9, y), text);

  // Who each run is.
  y += 30;
  const legend: string[] = [
    `<text x="${PAD}" y="${n(y)}" font-weight="bold">runs, in the order they first appear</text>`,
  ];
  const cols = tl.runs.length > 16 ? 2 : 1;
  const colW = (W - 2 * PAD) / cols;
  const perCol = Math.ceil(tl.runs.length / cols);
  const table = runTable(tl, Math.floor((colW - 40) / CH), cols === 1);
  for (const [i, r] of tl.runs.entries()) {
    const lx = PAD + Math.floor(i / perCol) * colW;
    const ly = y + 10 + (i % perCol) * 20;
    const line = table[i]!;
    const full = [r.id, identity(r), summary(tl, r)].filter(Boolean).join('  ');
    legend.push(
      `<g><rect x="${n(lx)}" y="${n(ly)}" width="${r.label.length > 1 ? 24 : 18}" height="16" fill="${r.colour}" rx="2"/>` +
        `<text x="${n(lx + (r.label.length > 1 ? 12 : 9))}" y="${n(ly + 12)}" text-anchor="middle" fill="${textOn(r.colour)}" font-weight="bold">${esc(r.label)}</text>` +
        `<text x="${n(lx + 30)}" y="${n(ly + 12)}" xml:space="preserve">${esc(line)}</text>${title(`${r.label} = ${full}`)}</g>`,
    );
  }
  y += 10 + perCol * 20 + 16;

  // The events, in words.
  if (tl.marks.length) {
    legend.push(`<text x="${PAD}" y="${n(y)}" font-weight="bold">timeouts, deadlocks, breaks and lost holds</text>`);
    for (const m of tl.marks.slice(0, MAX_EVENTS)) {
      y += 18;
      legend.push(
        symbol(m.kind, PAD + 8, y - 4),
        `<text x="${PAD + 22}" y="${n(y)}" xml:space="preserve">${esc(ellipsize(describeMark(tl, m), Math.floor((W - 2 * PAD - 22) / CH)))}</text>`,
      );
    }
    if (tl.marks.length > MAX_EVENTS) {
      y += 18;
      legend.push(
        `<text x="${PAD + 22}" y="${n(y)}" fill="#555">and ${tl.marks.length - MAX_EVENTS} more: hostlock history lists them all</text>`,
      );
    }
    y += 16;
  }
  const height = Math.ceil(y + PAD);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">`,
    `<rect width="${W}" height="${height}" fill="white"/>`,
    `<text x="${PAD}" y="26" font-size="16" font-weight="bold">${esc(heading)}</text>`,
    `<text x="${PAD}" y="46" fill="#444">${esc(`${source}: ${clock(tl.t0)} to ${clock(tl.t1)} (${seconds(span)}${tl.ongoing ? ', to now' : ''})`)}</text>`,
    ...backgrounds,
    ...grid,
    ...body,
    ...key,
    ...legend,
    '</svg>',
  ].join('\n');
}

// The longest text that fits a hold's bar: letter, run id, playbook.
function holdLabel(run: Run, width: number, height: number): { text: string; size: number } | null {
  if (height < 10) return null;
  const fits = Math.floor((width - 4) / CH);
  for (const text of [
    `${run.label} ${run.id}${run.playbook ? ` ${run.playbook}` : ''}`,
    `${run.label} ${run.id}`,
    run.label,
  ])
    if (text.length <= fits) return { text, size: 12 };
  // A narrow bar still shows its letter, smaller.
  if (run.label.length * SMALL <= width - 1) return { text: run.label, size: 10 };
  return null;
}

function markOf(tl: Timeline, w: Bar): Mark {
  return (
    tl.marks.find((m) => m.lock === w.lock && m.run === w.run && m.t === w.end && m.kind === w.outcome) ?? {
      kind: w.outcome as MarkKind,
      lock: w.lock,
      run: w.run,
      t: w.end,
    }
  );
}
