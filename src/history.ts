// The history of a lock directory: one JSON line per event (grant, release,
// wait, timeout, lost hold, deadlock, break) appended to `<dir>/.history/journal`.
//
// Many helpers append at once without a lock between them: each record is one
// write(2) on an O_APPEND descriptor and kept under PIPE_BUF (4096) bytes, so
// lines never interleave. The journal is bounded: a writer that finds it past
// its cap renames it to `journal.1` (replacing the previous one) under a brief
// flock, so at most two caps' worth is kept. A writer that opened the journal
// just before the rename finishes its line in `journal.1`; readers read both.
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { LockFile } from './lockfile';
import type { Holder } from './holders';
import type { DeadlockLink, HistoryEvent, HistoryEventKind, Mode } from './store';

export const HISTORY_DIR = '.history';
const MAX_RECORD = 4000; // below PIPE_BUF: one write holds whole lines only

// The journal's cap in bytes; `$HOSTLOCK_HISTORY_BYTES` overrides it.
function cap(): number {
  const n = Number(process.env.HOSTLOCK_HISTORY_BYTES);
  return Number.isFinite(n) && n >= 4096 ? n : 1 << 20;
}

// One line of the journal.
export interface HistoryRecord {
  t: string; // ISO 8601
  event: HistoryEventKind;
  name?: string;
  path: string;
  mode?: Mode;
  token?: number;
  wait?: string;
  waited?: number;
  reason?: string;
  cycle?: DeadlockLink[];
  victim?: Partial<Holder>;
  pid?: number;
  helper_pid?: number;
  user?: string;
  controller?: string;
  run?: string;
  playbook?: string;
  play?: string;
  task?: string;
  host?: string;
}

// An event as every store keeps it: the time, the lock, and who (this helper's PID too).
export function historyRecordOf(e: HistoryEvent): HistoryRecord {
  const { pid, user, controller, run, playbook, play, task, host } = e.who;
  return {
    t: (e.at ?? new Date()).toISOString(),
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

export function historyDir(lockDir: string): string {
  return join(lockDir, HISTORY_DIR);
}

// Lines wait for the end of the event loop's turn, so that writing them never
// delays a reply (a grant, a timeout); a process that exits flushes them first.
const pending = new Map<string, { lines: Buffer[]; groupShared: boolean }>();
let flushing = false;

// Appends one record; best effort (a full disk or a read-only directory loses
// the line, never the lock).
// `urgent` lines (a grant) are written at once, with any waiting before them.
export function appendHistory(lockDir: string, rec: HistoryRecord, groupShared = false, urgent = false): void {
  const dir = historyDir(lockDir);
  let p = pending.get(dir);
  if (!p) pending.set(dir, (p = { lines: [], groupShared }));
  p.lines.push(Buffer.from(fitRecord(rec) + '\n'));
  if (urgent) return flushHistory();
  if (!flushing) {
    flushing = true;
    setImmediate(flushHistory);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', flushHistory);
    }
  }
}
let exitHooked = false;

export function flushHistory(): void {
  flushing = false;
  for (const [dir, p] of pending) {
    pending.delete(dir);
    // Whole lines per write, each write under PIPE_BUF.
    let batch: Buffer[] = [];
    let size = 0;
    for (const line of p.lines) {
      if (size + line.length > MAX_RECORD && batch.length) {
        writeLines(dir, Buffer.concat(batch), p.groupShared);
        batch = [];
        size = 0;
      }
      batch.push(line);
      size += line.length;
    }
    if (batch.length) writeLines(dir, Buffer.concat(batch), p.groupShared);
  }
}

// The journal is opened for each write: a descriptor kept open would pin the
// lock directory's file system.
function writeLines(dir: string, text: Buffer, groupShared: boolean): void {
  const file = join(dir, 'journal');
  const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;
  const mode = groupShared ? 0o660 : 0o600;
  try {
    let fd: number;
    try {
      fd = openSync(file, flags, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(dir, { recursive: true, mode: groupShared ? 0o2770 : 0o700 });
      if (groupShared) chmodSync(dir, 0o2770); // past the umask: every member appends
      fd = openSync(file, flags, mode);
    }
    try {
      writeSync(fd, text);
      const st = fstatSync(fd);
      if (groupShared && st.uid === process.getuid?.() && (st.mode & 0o777) !== 0o660) fchmodSync(fd, 0o660);
      if (st.size > cap()) rotate(dir, file, groupShared);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* history is best effort */
  }
}

// One rotation at a time; the second writer to get here finds the new
// journal small and leaves it.
function rotate(dir: string, file: string, groupShared: boolean): void {
  const lock = LockFile.open(join(dir, 'rotate.lock'), groupShared);
  try {
    lock.lockBlocking();
    const st = statSync(file, { throwIfNoEntry: false });
    if (st && st.size > cap()) renameSync(file, file + '.1');
  } finally {
    lock.close();
  }
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
  const { t, event, path, name, token, wait, pid, run } = rec;
  return JSON.stringify({ t, event, path: path.slice(0, 1000), name: name?.slice(0, 1000), token, wait, pid, run });
}

// Every record of a lock directory, oldest first; lines that do not parse are skipped.
export function readHistory(lockDir: string): HistoryRecord[] {
  const dir = historyDir(lockDir);
  const out: HistoryRecord[] = [];
  for (const f of ['journal.1', 'journal']) {
    let text: string;
    try {
      text = readFileSync(join(dir, f), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const r = JSON.parse(line) as HistoryRecord;
        if (r && typeof r.t === 'string' && typeof r.event === 'string') out.push(r);
      } catch {
        /* a line cut by a full disk */
      }
    }
  }
  // A writer that opened the journal just before a rotation lands in journal.1 after newer lines.
  return out.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
}
