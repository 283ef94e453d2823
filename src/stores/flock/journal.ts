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
  constants,
} from 'node:fs';
import { join } from 'node:path';
import { LockFile } from './lockfile';
import { MAX_RECORD, fitRecord } from '../../store/records';
import type { HistoryRecord } from '../../store/types';

export const HISTORY_DIR = '.history';

// The journal's cap in bytes; `$HOSTLOCK_HISTORY_BYTES` overrides it.
function cap(): number {
  const n = Number(process.env.HOSTLOCK_HISTORY_BYTES);
  return Number.isFinite(n) && n >= 4096 ? n : 1 << 20;
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
