// Elapsed time as the protocol reports it: seconds with millisecond precision.
export function secondsSince(startMs: number): number {
  return Math.round(performance.now() - startMs) / 1000;
}
