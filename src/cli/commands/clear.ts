// `hostlock clear`: removes the lock files of a directory that nobody holds
// or waits for. Each is removed while this process holds its lock, after
// checking that the path still names the file it locked, so a hostlock user
// that opened it meanwhile sees the file gone after its own flock and starts
// over on a new one: exclusion holds among hostlock users. A flock(1) or fcntl
// user of the same file does not re-check: one that opened the file just
// before the removal and locks it just after holds a file nobody else will
// open. `--help` says so.
import { lstatSync, unlinkSync } from 'node:fs';
import { LockManager } from '../../policy/manager';
import { LockFile } from '../../stores/flock/lockfile';
import { turnstilePathFor } from '../../stores/flock/turnstile';
import { selectRows, type StatusFilter } from './status';

export interface ClearResult {
  dir: string;
  cleared: string[];
  kept: Array<{ name: string; why: string }>;
}

export function clearLocks(dir: string | undefined, names: string[], dryRun: boolean): ClearResult {
  const m = new LockManager();
  let listed;
  try {
    listed = m.list(dir);
  } finally {
    m.shutdown();
  }
  const filter: StatusFilter = { names, held: false };
  const rows = selectRows(listed.locks, filter);
  const result: ClearResult = { dir: listed.dir, cleared: [], kept: [] };
  for (const row of rows) {
    const lock = listed.locks.find((l) => l.name === row.name);
    if (!lock) continue; // a name asked for that has no lock file
    if (lock.held || lock.waiters.length) {
      result.kept.push({ name: row.name, why: lock.held ? 'held' : 'waited for' });
      continue;
    }
    const why = removeIfFree(lock.path, dryRun);
    if (why) result.kept.push({ name: row.name, why });
    else result.cleared.push(row.name);
  }
  return result;
}

// Takes the lock (and its turnstile's, where one exists) without waiting and
// removes the files while holding them; a reason when it cannot.
function removeIfFree(path: string, dryRun: boolean): string | null {
  let file: LockFile;
  try {
    file = LockFile.open(path);
  } catch (err) {
    return (err as Error).message;
  }
  let turnstile: LockFile | undefined;
  try {
    if (!file.tryLock('exclusive')) return 'held';
    if (!file.stillAtPath()) return 'replaced meanwhile';
    const tpath = turnstilePathFor(path);
    if (lstatSync(tpath, { throwIfNoEntry: false })?.isFile()) {
      turnstile = LockFile.open(tpath);
      if (!turnstile.tryLock('exclusive')) return 'waited for';
    }
    if (dryRun) return null;
    if (turnstile?.stillAtPath()) unlinkSync(tpath);
    unlinkSync(path);
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    turnstile?.close();
    file.close();
  }
}

export function printClear(r: ClearResult, dryRun: boolean, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const verb = dryRun ? 'would clear' : 'cleared';
  process.stdout.write(`lock directory ${r.dir}: ${verb} ${r.cleared.length} lock file(s), kept ${r.kept.length}\n`);
  for (const n of r.cleared) process.stdout.write(`  ${verb} ${n}\n`);
  for (const k of r.kept) process.stdout.write(`  kept ${k.name}: ${k.why}\n`);
}
