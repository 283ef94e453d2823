// Holder records: who holds which lock file, readable without taking the lock.
// One small JSON file per hold, named after the lock file's inode, written
// atomically and removed on release. A record whose helper process is gone
// (PID absent or reused, told apart by start time) is never reported, and the
// kernel's /proc/locks has the last word on whether the inode is locked at all.
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RecordFiles } from './recordfiles';
import type { Holder } from '../../store/types';
import {
  controllerName,
  commandLine,
  flockKeepers,
  isSameProcess,
  kernelInodeKey,
  processStartTime,
  processUser,
  readKernelLocks,
  readProcStat,
  type KernelLock,
} from '../../sys/proc';

export interface StoredRecord extends Holder {
  name?: string;
  path: string;
  inode: string;
  helper_start: string;
  // A lock on a descriptor of another process (`hostlock flock N` in a
  // shell): the record lasts while that process keeps this descriptor on the inode.
  fd?: number;
}

// The process that keeps a hold, when it is not this one (see `fd` above).
export interface Keeper {
  pid: number;
  start: string;
  fd: number;
}

// A short tag of a lock path for record file names (FNV-1a, 32 bits): a
// collision only makes `readPath` parse a record it then filters out.
export function pathTag(path: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < path.length; i++) {
    h ^= path.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}
let helperStart: string | undefined;
let seq = 0;

export class HolderRegistry {
  private ready = false;
  // The records this process wrote and has not removed, by file name: a scan
  // takes them from here instead of reading and checking each file again.
  private readonly mine = new Map<string, StoredRecord>();
  private readonly files: RecordFiles;
  constructor(
    readonly dir: string,
    private readonly dirMode = 0o700,
  ) {
    this.files = new RecordFiles(dir, dirMode === 0o700 ? 0o600 : 0o660);
  }

  private ensure(): boolean {
    if (!this.ready) {
      try {
        mkdirSync(this.dir, { recursive: true, mode: this.dirMode });
        // The umask may have dropped the group bits that let every member of a
        // team directory write its records.
        const st = statSync(this.dir);
        if (st.uid === process.getuid?.() && (st.mode & 0o7777) !== this.dirMode) chmodSync(this.dir, this.dirMode);
        this.ready = true;
      } catch {
        return false; // records are best effort: a lock never fails for want of one
      }
    }
    return true;
  }

  // Writes the record of a new hold; returns its file name (the key to update or remove it).
  add(inode: string, path: string, name: string | undefined, holder: Holder, keeper?: Keeper): string | undefined {
    if (!this.ensure()) return undefined;
    helperStart ??= processStartTime(process.pid) ?? '0';
    const file = `${namePrefix(inode, path)}${process.pid}.${++seq}.json`;
    const helper = keeper
      ? { helper_pid: keeper.pid, helper_start: keeper.start, fd: keeper.fd }
      : { helper_pid: process.pid, helper_start: helperStart };
    this.write(file, { ...holder, name, path, inode, ...helper });
    if (keeper) this.mine.delete(file); // kept by another process: judged like anyone else's
    return file;
  }

  // Drops the records of holds that `pid` keeps on `inode` (it unlocked them).
  removeKeptBy(inode: string, pid: number): void {
    const prefix = inode.replace(/:/g, '_') + '.';
    let files: string[];
    try {
      files = readdirSync(this.dir).filter((f) => f.startsWith(prefix) && f.endsWith('.json'));
    } catch {
      return;
    }
    for (const f of files) {
      try {
        const rec = JSON.parse(readFileSync(join(this.dir, f), 'utf8')) as StoredRecord;
        if (rec.helper_pid === pid && rec.fd !== undefined) this.remove(f);
      } catch {
        /* gone meanwhile */
      }
    }
  }

  update(file: string | undefined, patch: Partial<Holder>): void {
    if (!file) return;
    try {
      const rec = JSON.parse(readFileSync(join(this.dir, file), 'utf8')) as StoredRecord;
      this.write(file, { ...rec, ...patch });
    } catch {
      /* gone: nothing to update */
    }
  }

  remove(file: string | undefined): void {
    if (!file) return;
    this.mine.delete(file);
    this.files.remove(file);
  }

  // Atomic for readers (recordfiles.ts).
  private write(file: string, rec: StoredRecord): void {
    if (this.files.write(file, JSON.stringify(rec))) this.mine.set(file, rec);
  }

  // Live records for one inode, dead ones swept away as they are found.
  read(inode: string): StoredRecord[] {
    const prefix = inode.replace(/:/g, '_') + '.';
    return this.scan((f) => f.startsWith(prefix));
  }

  // Live records of one path, whatever inode they hold (found by the name's
  // path tag, so that only they are parsed).
  readPath(path: string): StoredRecord[] {
    const tag = `.${pathTag(path)}.`;
    return this.scan((f) => f.includes(tag)).filter((r) => r.path === path);
  }

  // Live records of every inode.
  readAll(): StoredRecord[] {
    return this.scan(() => true);
  }

  private scan(match: (file: string) => boolean): StoredRecord[] {
    let files: string[];
    try {
      files = readdirSync(this.dir).filter((f) => !f.startsWith('.') && f.endsWith('.json') && match(f));
    } catch {
      return [];
    }
    const out: StoredRecord[] = [];
    const alive = new Map<string, boolean>(); // one /proc read per helper, not per record
    for (const f of files) {
      const own = this.mine.get(f);
      if (own) {
        out.push(own);
        continue;
      }
      let rec: StoredRecord;
      try {
        rec = JSON.parse(readFileSync(join(this.dir, f), 'utf8')) as StoredRecord;
      } catch {
        continue;
      }
      // Read from a file renamed and rewritten meanwhile (recordfiles.ts): not this file's record.
      if (rec.helper_pid === undefined || !namedFor(f, rec)) continue;
      const helper = `${rec.helper_pid}:${rec.helper_start}`;
      let live = alive.get(helper);
      if (live === undefined) alive.set(helper, (live = isSameProcess(rec.helper_pid, rec.helper_start)));
      if (live && (rec.fd === undefined || descriptorOn(rec.helper_pid, rec.fd, rec.inode))) out.push(rec);
      else this.remove(f);
    }
    return out;
  }
}

// A record file's name starts with its inode and its path's tag.
function namePrefix(inode: string, path: string): string {
  return `${inode.replace(/:/g, '_')}.${pathTag(path)}.`;
}

function namedFor(file: string, rec: StoredRecord): boolean {
  return (
    typeof rec.inode === 'string' && typeof rec.path === 'string' && file.startsWith(namePrefix(rec.inode, rec.path))
  );
}

// Does process `pid` still have descriptor `fd` open on `inode`?
function descriptorOn(pid: number, fd: number, inode: string): boolean {
  try {
    const st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
    return kernelInodeKey(st.dev, st.ino) === inode;
  } catch {
    return false;
  }
}

// Holders of an inode: hostlock's records, checked against the kernel's lock
// table, plus any holder without a record (flock(1), Python fcntl) as foreign.
export function holdersOf(registry: HolderRegistry, inode: string, kernel = readKernelLocks()): Holder[] {
  const records = registry.read(inode);
  if (kernel === null) return records.map(publicHolder);
  const onInode = kernel.filter((k) => k.inode === inode);
  if (onInode.length === 0) return [];
  const helpers = new Set(records.map((r) => r.helper_pid));
  const out = records.map(publicHolder);
  let keepers: Holder[] | undefined;
  for (const k of onInode) {
    if (helpers.has(k.pid)) continue;
    if (processStartTime(k.pid) !== null) {
      out.push(foreignHolder(k));
      continue;
    }
    // A lock taken by our flock(1) waiter child shows the child's PID, dead by
    // now. Without any live record, though, a dead PID's lock is still held by
    // someone who inherited it (the command of a killed `hostlock run`): the
    // live processes that keep it are named instead.
    if (records.length > 0 || keepers) continue;
    keepers = inheritors(inode, helpers);
    out.push(...(keepers.length ? keepers : [foreignHolder(k)]));
  }
  return out;
}

// Holds on a file that is no longer at its path: someone deleted or replaced
// it under its holder. They are live records of `path` on another inode that
// the kernel still shows locked, and they exclude nobody who opens the path
// now; any helper reports them (`lost: true`), not only the one that holds.
export function lostHoldersOf(
  records: StoredRecord[],
  path: string,
  currentInode: string | null,
  kernel = readKernelLocks(),
): Holder[] {
  return records
    .filter(
      (r) =>
        r.path === path &&
        r.slot === undefined && // a slot's file is not the lock's file
        r.inode !== currentInode &&
        (kernel === null || kernel.some((k) => k.inode === r.inode)),
    )
    .map((r) => ({ ...publicHolder(r), lost: true }));
}

function publicHolder(r: StoredRecord): Holder {
  const { name: _n, path: _p, inode: _i, helper_start: _s, fd: _f, ...h } = r; // the store's own fields stay private
  const run = typeof r.run === 'string' ? /^(\d+)-(\d+)$/.exec(r.run) : null;
  if (run && processStartTime(Number(run[1])) !== run[2]) h.run_ended = true;
  return h;
}

function foreignHolder(k: KernelLock): Holder {
  const command = commandLine(k.pid);
  return {
    pid: k.pid,
    user: processUser(k.pid) ?? '?',
    controller: controllerName(),
    mode: k.mode,
    since: '',
    foreign: true,
    ...(command !== undefined && { command }),
  };
}

// The live keepers of a lock whose taker is gone; of a parent and its child
// that both keep it (a shell and its command), the parent only.
function inheritors(inode: string, helpers: Set<number | undefined>): Holder[] {
  const found = flockKeepers(inode).filter((k) => !helpers.has(k.pid));
  const pids = new Set(found.map((k) => k.pid));
  return found
    .filter((k) => !pids.has(readProcStat(k.pid)?.ppid ?? 0))
    .map((k) => foreignHolder({ pid: k.pid, mode: k.mode, inode }));
}
