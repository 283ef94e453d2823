// Events as history records: the one format every store keeps, and how a
// record is cut to fit a journal line or a store's value.
import type { DeadlockLink, HistoryEvent, HistoryRecord } from './types';
import { isoTime } from '../core/time';

// Below PIPE_BUF: a journal line written in one write(2) is never interleaved.
export const MAX_RECORD = 4000;

// An event as every store keeps it: the time, the lock, and who (this helper's PID too).
export function historyRecordOf(e: HistoryEvent): HistoryRecord {
  const { pid, user, controller, run, playbook, play, task, host } = e.who;
  return {
    t: isoTime(e.at),
    event: e.event,
    name: e.key.name,
    path: e.key.id,
    mode: e.mode,
    token: e.token,
    wait: e.wait,
    waited: e.waited,
    reason: e.reason,
    cycle: e.cycle,
    victim: e.victim,
    pid,
    helper_pid: process.pid,
    user,
    controller,
    run,
    playbook,
    play,
    task,
    host,
  };
}

// A record as JSON of at most `maxBytes`: long fields are cut (so that a
// journal line stays one atomic write, a store's value a few kilobytes).
export function fitRecord(rec: HistoryRecord, maxBytes = MAX_RECORD): string {
  let text = JSON.stringify(rec);
  if (Buffer.byteLength(text) <= maxBytes) return text;
  const cut: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rec))
    cut[k] = typeof v === 'string' && v.length > 200 ? v.slice(0, 200) + '…' : v;
  if (Array.isArray(cut.cycle)) cut.cycle = (cut.cycle as DeadlockLink[]).slice(0, 8);
  delete cut.victim;
  text = JSON.stringify(cut);
  if (Buffer.byteLength(text) <= maxBytes) return text;
  // What identifies the event, each text cut to a share of the bound by its
  // JSON size in bytes (multi-byte and escaped characters count as written).
  const { t, event, path, name, token, wait, pid, run } = rec;
  const share = Math.max(16, Math.floor((maxBytes - 160) / 4));
  return JSON.stringify({
    t,
    event,
    path: cutBytes(path, share),
    name: name === undefined ? undefined : cutBytes(name, share),
    token,
    wait: wait === undefined ? undefined : cutBytes(wait, share),
    pid,
    run: run === undefined ? undefined : cutBytes(run, share),
  });
}

// The longest head of `s` whose JSON string is at most `bytes` bytes.
function cutBytes(s: string, bytes: number): string {
  if (Buffer.byteLength(JSON.stringify(s)) <= bytes) return s;
  let lo = 0;
  let hi = s.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (Buffer.byteLength(JSON.stringify(s.slice(0, mid) + '…')) <= bytes) lo = mid;
    else hi = mid - 1;
  }
  return s.slice(0, lo) + '…';
}
