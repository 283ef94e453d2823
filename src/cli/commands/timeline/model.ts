// What a lock's history means, as the timeline draws it: holds (grant to
// release), waits (wait to its outcome) and the events an operator looks for
// first (timeouts, deadlocks, breaks, lost holds), each on its lock's row.
import type { HistoryRecord } from '../../../store/types';

export interface Bar {
  lock: string;
  run: string;
  kind: 'hold' | 'wait';
  start: number; // ms since the epoch
  end: number;
  open: boolean; // no end in the history: drawn to the window's edge or the next holder
  before?: boolean; // began before the first record read (only its end is in range)
  mode?: string;
  token?: number;
  task?: string;
  host?: string;
  outcome?: string; // holds: release, lost, break; waits: grant, timeout, cancel, deadlock
  for: string[]; // waits: the runs that held the lock meanwhile (or, at once, just before)
}

export type MarkKind = 'timeout' | 'deadlock' | 'break' | 'lost' | 'cancel';

// One event drawn as a symbol: on `lock`, at `t`, happening to `run`.
export interface Mark {
  kind: MarkKind;
  lock: string;
  run: string;
  t: number;
  reason?: string;
  by?: string; // break: the run that broke the hold
}

export const runOf = (r: Pick<HistoryRecord, 'run' | 'pid'>) => r.run ?? `pid ${r.pid ?? '?'}`;
const lockOf = (r: HistoryRecord) => r.name ?? r.path;

// Records by time; records of one millisecond keep the order they were read in.
export function byTime(records: HistoryRecord[]): HistoryRecord[] {
  return records
    .map((r, i) => ({ r, i, t: Date.parse(r.t) }))
    .sort((a, b) => a.t - b.t || a.i - b.i)
    .map((x) => x.r);
}

// Holds (grant to release, lost or break, matched by token) and waits (wait
// to its outcome, matched by wait id). An exclusive grant means every earlier
// holder of the lock is gone: their bars end there. Their releases may be
// stamped a moment later (the releaser writes its line after the grant it
// enabled) and still count as releases. A holder killed outright leaves none.
// An end whose beginning is before the first record (history read --since)
// is drawn from the window's start.
export function bars(records: HistoryRecord[], until: number): Bar[] {
  return readHistory(records, until).bars;
}

export function readHistory(records: HistoryRecord[], until: number): { bars: Bar[]; marks: Mark[] } {
  const sorted = byTime(records);
  const out: Bar[] = [];
  const marks: Mark[] = [];
  const holds = new Map<string, Bar>();
  const waits = new Map<string, Bar>();
  const endedByGrant = new Map<string, Bar>();
  const holdKey = (r: HistoryRecord) => `${r.path}\0${r.token}`;
  const first = sorted.length ? Date.parse(sorted[0]!.t) : until;
  const bar = (r: HistoryRecord, kind: Bar['kind'], start: number, end: number, open: boolean): Bar => ({
    lock: lockOf(r),
    run: runOf(r),
    kind,
    start,
    end,
    open,
    mode: r.mode,
    task: r.task,
    host: r.host,
    for: [],
  });
  const closeWait = (r: HistoryRecord, t: number, outcome: string): boolean => {
    const k = `${r.path}\0${r.wait}`;
    const w = waits.get(k);
    if (!w) return false;
    w.end = t;
    w.open = false;
    w.outcome = outcome;
    waits.delete(k);
    return true;
  };
  // A wait known only from how it ended: `waited` seconds before it.
  const waitFromEnd = (r: HistoryRecord, t: number, outcome: string) => {
    const w = bar(r, 'wait', Math.max(t - (r.waited ?? 0) * 1000, first), t, false);
    w.before = t - (r.waited ?? 0) * 1000 < first;
    w.outcome = outcome;
    out.push(w);
  };
  for (const r of sorted) {
    const t = Date.parse(r.t);
    const lock = lockOf(r);
    switch (r.event) {
      case 'wait':
        if (r.wait) {
          const b = bar(r, 'wait', t, until, true);
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
        const b = bar(r, 'hold', t, until, true);
        b.token = r.token;
        holds.set(holdKey(r), b);
        out.push(b);
        // A wait too short to be recorded on its own is known from the grant.
        if (!(r.wait && closeWait(r, t, 'grant')) && (r.waited ?? 0) >= 0.02) waitFromEnd(r, t, 'grant');
        break;
      }
      case 'release':
      case 'lost':
      case 'break': {
        const k = holdKey(r);
        let h = holds.get(k) ?? endedByGrant.get(k);
        if (h && holds.has(k)) h.end = t;
        holds.delete(k);
        endedByGrant.delete(k);
        if (!h) {
          // Granted before the records begin.
          h = bar(r, 'hold', first, t, false);
          h.before = true;
          h.token = r.token;
          if (r.event === 'break' && r.victim) {
            h.run = runOf(r.victim);
            h.task = r.victim.task;
            h.host = r.victim.host;
          }
          out.push(h);
        }
        // An end stamped after the grant that followed stays at that grant: the two never overlapped.
        h.open = false;
        h.outcome = r.event;
        if (r.event !== 'release')
          marks.push({
            kind: r.event,
            lock,
            run: h.run,
            t: Math.min(t, h.end),
            reason: r.reason,
            by: r.event === 'break' ? runOf(r) : undefined,
          });
        break;
      }
      case 'timeout':
      case 'cancel':
      case 'deadlock':
        if (!closeWait(r, t, r.event)) waitFromEnd(r, t, r.event);
        marks.push({ kind: r.event, lock, run: runOf(r), t, reason: r.reason });
        break;
    }
  }
  whoWasWaitedFor(out);
  return { bars: out, marks };
}

// Who each wait waited for: the other runs holding that lock meanwhile (a
// shared wait only for exclusive holders). A wait granted at once waited for
// whoever held the lock at that instant: the hold the grant took over.
function whoWasWaitedFor(all: Bar[]): void {
  const held = all.filter((b) => b.kind === 'hold');
  for (const w of all) {
    if (w.kind !== 'wait') continue;
    const instant = w.end <= w.start;
    for (const h of held) {
      if (h.lock !== w.lock || h.run === w.run || w.for.includes(h.run)) continue;
      if (w.mode === 'shared' && h.mode === 'shared') continue;
      const overlaps = instant ? h.start < w.start && h.end >= w.start : h.start < w.end && h.end > w.start;
      if (overlaps) w.for.push(h.run);
    }
  }
}
