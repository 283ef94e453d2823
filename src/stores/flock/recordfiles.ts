// The files of one record directory (holder or waiter records): each record
// is written whole to a file no reader looks at and renamed into place, so a
// reader sees a record complete or not at all.
//
// Creating an inode is the costliest step of a grant on most file systems;
// overwriting one is not. A removed record's file is therefore renamed aside
// as a spare of this process (a hidden name no scan reads) and the next
// record is written into it. Spares are removed when the process exits, and
// those of a process that died are swept by the next one to keep spares in
// the directory.
// A process's first record is removed outright: a command that holds one lock
// and exits (`hostlock flock`, `hostlock run`) would only pay for a spare.
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  openSync,
  readdirSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isSameProcess, processStartTime } from '../../sys/proc';

// Spares kept per directory: as many as this process releases records faster than it adds them.
const SPARES = 16;
const SPARE_PREFIX = '.spare.';

let processStart: string | undefined;
const open = new Set<RecordFiles>();
let exitHooked = false;

export class RecordFiles {
  // Spare files of this process, each with the bytes it holds.
  private readonly spares: Array<{ name: string; size: number }> = [];
  // The bytes of each record file this process wrote and has not removed.
  private readonly sizes = new Map<string, number>();
  private seq = 0;
  private written = 0;
  private swept = false;

  constructor(
    readonly dir: string,
    private readonly fileMode: number,
  ) {}

  // Spares of processes that are gone; once per directory and process.
  private sweep(): void {
    this.swept = true;
    let files: string[];
    try {
      files = readdirSync(this.dir).filter((f) => f.startsWith(SPARE_PREFIX));
    } catch {
      return;
    }
    for (const f of files) {
      const [pid, start] = f.slice(SPARE_PREFIX.length).split('.');
      if (Number(pid) === process.pid || isSameProcess(Number(pid), start)) continue;
      try {
        unlinkSync(join(this.dir, f));
      } catch {
        /* swept by someone else */
      }
    }
  }

  // Writes `text` as record file `file`; false if it could not be written.
  write(file: string, text: string): boolean {
    this.written++;
    const data = Buffer.from(text);
    for (let spare = this.spares.pop(); spare; spare = this.spares.pop()) {
      if (this.fill(spare, data)) {
        try {
          renameSync(join(this.dir, spare.name), join(this.dir, file));
          this.sizes.set(file, Math.max(spare.size, data.length));
          return true;
        } catch {
          this.discard(spare.name);
        }
      }
    }
    return this.create(file, data);
  }

  // The record is gone for readers at once; its file becomes a spare.
  remove(file: string): void {
    const size = this.sizes.get(file);
    this.sizes.delete(file);
    const path = join(this.dir, file);
    if (size !== undefined && this.written > 1 && this.spares.length < SPARES) {
      if (!this.swept) this.sweep();
      processStart ??= processStartTime(process.pid) ?? '0';
      const name = `${SPARE_PREFIX}${process.pid}.${processStart}.${++this.seq}`;
      try {
        renameSync(path, join(this.dir, name));
        this.spares.push({ name, size });
        hookExit(this);
        return;
      } catch {
        /* removed by someone else, or renamed: unlink below */
      }
    }
    try {
      unlinkSync(path);
    } catch {
      /* already gone */
    }
  }

  // Removes the spares (at exit).
  dropSpares(): void {
    for (const s of this.spares.splice(0)) this.discard(s.name);
  }

  // Overwrites a spare with `data`, padded with spaces (JSON allows them) to
  // the bytes it already holds, so that no block is freed and allocated again.
  // A spare that is no longer our own plain file (another member of a team
  // directory may rename files in it) is left alone.
  private fill(spare: { name: string; size: number }, data: Buffer): boolean {
    let fd: number;
    try {
      fd = openSync(join(this.dir, spare.name), constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      return false;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || st.nlink !== 1 || st.uid !== process.getuid?.()) return false;
      let out = data;
      if (data.length < spare.size) {
        out = Buffer.alloc(spare.size, 0x20);
        data.copy(out);
      }
      writeSync(fd, out, 0, out.length, 0);
      spare.size = out.length;
      return true;
    } catch {
      this.discard(spare.name);
      return false;
    } finally {
      closeSync(fd);
    }
  }

  // A new file, under a temporary name first. O_EXCL and an unguessable
  // name, so that a symlink planted by another member of a team directory can
  // never make us write through it.
  private create(file: string, data: Buffer): boolean {
    for (let attempt = 0; attempt < 3; attempt++) {
      const tmp = join(this.dir, `.${file}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`);
      let fd: number;
      try {
        fd = openSync(tmp, 'wx', this.fileMode);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        return false;
      }
      try {
        if (this.fileMode !== 0o600) fchmodSync(fd, this.fileMode); // past the umask
        writeSync(fd, data);
        closeSync(fd);
        fd = -1;
        renameSync(tmp, join(this.dir, file));
        this.sizes.set(file, data.length);
        return true;
      } catch {
        if (fd >= 0) closeSync(fd);
        try {
          unlinkSync(tmp);
        } catch {
          /* nothing written */
        }
        return false;
      }
    }
    return false;
  }

  private discard(name: string): void {
    try {
      unlinkSync(join(this.dir, name));
    } catch {
      /* gone */
    }
  }
}

function hookExit(files: RecordFiles): void {
  open.add(files);
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const f of open) f.dropSpares();
  });
}
