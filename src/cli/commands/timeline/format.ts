// Text as both drawings write it: names cut at the end, times on the axis.

// At most `max` characters: the start kept, the cut marked with an ellipsis.
export function ellipsize(s: string, max: number): string {
  if (s.length <= max) return s;
  return max <= 1 ? '…'.slice(0, max) : s.slice(0, max - 1) + '…';
}

// Seconds as "0.35s", "12.5s", "4m05s" or "2h03m".
export function seconds(ms: number, digits = 1): string {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(digits)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const STEPS = [
  0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
  86400,
].map((s) => s * 1000);

// Axis ticks: a round step giving at most `most` intervals over `span` ms.
export function tickStep(span: number, most: number): number {
  return STEPS.find((s) => span / s <= most) ?? Math.ceil(span / most / 86_400_000) * 86_400_000;
}

// A tick's label: whole units when the step is whole.
export function tickLabel(ms: number, step: number): string {
  if (ms === 0) return '0s';
  if (ms < 60_000) return `${+(ms / 1000).toFixed(step < 100 ? 2 : step < 1000 ? 1 : 0)}s`;
  return seconds(ms);
}

// An absolute time as the records give it, to the millisecond.
export const clock = (ms: number) => new Date(ms).toISOString();

// Widths for the columns of a table that fits `total` characters: each column
// as wide as its widest cell; if that is too wide, the columns in `shrink`
// ([index, least width], first shrunk first) are narrowed.
export function columnWidths(rows: string[][], total: number, shrink: [number, number][], gap = 2): number[] {
  const widths = (rows[0] ?? []).map((_, c) => Math.max(0, ...rows.map((r) => r[c]!.length)));
  const over = () => widths.reduce((s, w) => s + (w ? w + gap : 0), -gap) - total;
  for (const [c, least] of shrink)
    if (over() > 0) widths[c] = Math.max(Math.min(least, widths[c]!), widths[c]! - over());
  return widths;
}

// A table's rows as text: cells cut to their column's width, padded, joined by gaps.
export function tableRows(rows: string[][], widths: number[], gap = 2): string[] {
  return rows.map((r) =>
    r
      .map((cell, c) => (widths[c] ? ellipsize(cell, widths[c]).padEnd(widths[c]) : ''))
      .filter((cell, c) => widths[c])
      .join(' '.repeat(gap))
      .trimEnd(),
  );
}
