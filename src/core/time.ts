// The monotonic clock every wait, timeout and elapsed figure is measured on,
// in milliseconds. process.hrtime, not performance.now(): the global
// `performance` loads perf_hooks and its modules, a cost to every start.
export function nowMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1000 + ns / 1e6;
}

// Elapsed time as the protocol reports it: seconds with millisecond precision.
export function secondsSince(startMs: number): number {
  return Math.round(nowMs() - startMs) / 1000;
}

// `d` as Date.prototype.toISOString writes it (2026-12-03T10:52:13.042Z), from
// the UTC fields: toISOString loads the time zone data first, a quarter of a
// millisecond of every start that writes a record.
export function isoTime(d: Date = new Date()): string {
  const p = (n: number, width = 2) => String(n).padStart(width, '0');
  return (
    `${p(d.getUTCFullYear(), 4)}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}` +
    `T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}Z`
  );
}
