// The lock engine's lowest layer: one open lock file and flock(2) on it. It
// knows files and the kernel, nothing of waiting policy or holders.
import type { ChildProcess } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  fstatSync,
  lstatSync,
  openSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, HostlockError, fromErrno } from '../../core/errors';
import type { Mode } from '../../core/mode';
import { isHashedStem, LOCK_SUFFIX } from './names';
import { kernelInodeKey } from '../../sys/proc';

// Two ways to flock(2) our own descriptor, with the same kernel lock either
// way: fs-ext's native binding, where npm built it for this Node, and
// otherwise flock(1) run on a descriptor it inherits from us (the lock belongs
// to the open file description, so it stays ours when flock(1) exits). The
// bundled helper (a collection's, an execution environment's) carries no
// native addon, so it takes flock(1): a process start per lock, no compiler.
const FLOCK_BIN = ['/usr/bin/flock', '/bin/flock'].find((p) => existsSync(p));

// fs-ext's compiled binding, opened by its path in the nearest node_modules
// that has the package, where require would find it: require('fs-ext') would
// also resolve and compile the package's wrapper, a millisecond of every start.
interface FlockBinding {
  flock(fd: number, operation: number): void;
  constants: { LOCK_SH: number; LOCK_EX: number; LOCK_NB: number; LOCK_UN: number };
}
let binding: FlockBinding | null | undefined;

export type FlockApi = 'fs-ext' | 'flock(1)';

function nativeFlock(): FlockBinding | null {
  if (binding !== undefined) return binding;
  binding = null;
  if (process.env.HOSTLOCK_FLOCK === 'flock1') return binding;
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const pkg = join(dir, 'node_modules', 'fs-ext');
    if (existsSync(pkg)) {
      try {
        const m = { exports: {} };
        process.dlopen(m, join(pkg, 'build', 'Release', 'fs_ext.node'));
        binding = m.exports as FlockBinding;
      } catch {
        // not built, or built for another Node or architecture
      }
      return binding;
    }
    if (dirname(dir) === dir) return binding;
  }
}

// flock(2) through the binding: blocking unless `nonblock`.
function nativeLock(b: FlockBinding, fd: number, op: Mode | 'unlock', nonblock: boolean): void {
  const c = b.constants;
  const base = op === 'unlock' ? c.LOCK_UN : op === 'shared' ? c.LOCK_SH : c.LOCK_EX;
  b.flock(fd, nonblock ? base | c.LOCK_NB : base);
}

// Which of the two this helper uses (HOSTLOCK_FLOCK=flock1 forces flock(1)).
export function flockApi(): FlockApi {
  return nativeFlock() ? 'fs-ext' : 'flock(1)';
}

// flock(1) on our descriptor 3 in a child: exit 0 taken, 1 busy (-n).
function flockChild(fd: number, args: string[]): number {
  if (!FLOCK_BIN) {
    throw new HostlockError(
      ErrorCode.IoError,
      'cannot lock: neither the fs-ext binding nor flock(1) is available; install util-linux (it provides flock)',
    );
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: most fs-ext helpers never need it
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const r = spawnSync(FLOCK_BIN, [...args, '3'], { stdio: ['ignore', 'ignore', 'pipe', fd], encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status === 0 || r.status === 1) return r.status;
  const why = (r.stderr ?? '').trim().replace(/^flock: /, '') || `flock(1) ended with ${r.status ?? r.signal}`;
  const code = /bad file descriptor/i.test(why) ? 'EBADF' : /no locks available/i.test(why) ? 'ENOLCK' : 'EIO';
  throw Object.assign(new Error(why), { code });
}

// One non-blocking flock(2) on any descriptor of ours (or LOCK_UN): null when
// done, else the errno's code (EWOULDBLOCK on contention).
export function flockOnce(fd: number, op: Mode | 'unlock'): string | null {
  try {
    const native = nativeFlock();
    if (native) nativeLock(native, fd, op, true);
    else if (flockChild(fd, ['-n', op === 'unlock' ? '-u' : op === 'shared' ? '-s' : '-x']) !== 0) return 'EWOULDBLOCK';
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'EIO';
  }
}

// Never O_TRUNC; O_NOFOLLOW refuses a planted symlink; O_NONBLOCK keeps a FIFO
// that appears between the lstat and the open from hanging us. libuv opens
// every file with O_CLOEXEC, so no child process inherits a lock by accident.
const OPEN_FLAGS = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export class LockFile implements Lockable {
  private constructor(
    readonly path: string,
    readonly fd: number,
    readonly dev: bigint,
    readonly ino: bigint,
  ) {}

  // `name`, for a lock file whose stem is a hash of its name, is written into
  // the new (empty) file; nothing else ever writes to a lock file.
  static open(path: string, groupShared = false, name?: string): LockFile {
    try {
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (st && !st.isFile()) refuse(path, st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file');
    } catch (err) {
      throw fromErrno(err, path, 'open the lock file');
    }
    let fd: number;
    try {
      fd = openSync(path, OPEN_FLAGS, groupShared ? 0o660 : 0o600);
    } catch (err) {
      throw fromErrno(err, path, 'open the lock file');
    }
    try {
      const st = fstatSync(fd, { bigint: true });
      if (!st.isFile()) refuse(path, 'not a regular file');
      // umask may have dropped the group bits a team directory needs.
      if (groupShared && st.uid === BigInt(process.getuid?.() ?? -1) && (st.mode & 0o777n) !== 0o660n) {
        fchmodSync(fd, 0o660);
      }
      if (name !== undefined && st.size === 0n && isHashedStem(basename(path, LOCK_SUFFIX))) writeSync(fd, name, 0);
      return new LockFile(path, fd, st.dev, st.ino);
    } catch (err) {
      closeSync(fd);
      throw fromErrno(err, path, 'open the lock file');
    }
  }

  get inodeKey(): string {
    return kernelInodeKey(this.dev, this.ino);
  }

  // One non-blocking flock(2). True when taken, false on contention.
  tryLock(mode: Mode): boolean {
    try {
      const native = nativeFlock();
      if (!native) return flockChild(this.fd, ['-n', mode === 'shared' ? '-s' : '-x']) === 0;
      nativeLock(native, this.fd, mode, true);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return false;
      throw fromErrno(err, this.path, 'lock');
    }
  }

  // A blocking flock(2), for locks only ever held for a moment (a token counter).
  lockBlocking(): void {
    try {
      const native = nativeFlock();
      if (native) nativeLock(native, this.fd, 'exclusive', false);
      else flockChild(this.fd, ['-x']);
    } catch (err) {
      throw fromErrno(err, this.path, 'lock');
    }
  }

  // After flock succeeds the path must still name this very file: someone may
  // have unlinked or replaced it while we waited, and a lock on an orphaned
  // inode excludes nobody who opens the path now.
  stillAtPath(): boolean {
    try {
      const mine = fstatSync(this.fd, { bigint: true });
      if (mine.nlink === 0n) return false;
      const now = statSync(this.path, { bigint: true, throwIfNoEntry: false });
      return !!now && now.dev === mine.dev && now.ino === mine.ino;
    } catch {
      return false;
    }
  }

  // Closing the descriptor is what releases the lock: the kernel drops a flock
  // when the last descriptor of its open file description closes.
  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

function refuse(path: string, what: string): never {
  throw new HostlockError(
    ErrorCode.PathRefused,
    `refusing to use ${path} as a lock file: it is ${what}; remove it or choose another name or path`,
    { path },
  );
}

// What a kernel wait needs of a file: its descriptor, and one non-blocking try
// (the fallback polls). A LockFile, or a descriptor `hostlock flock` was given.
export interface Lockable {
  readonly fd: number;
  tryLock(mode: Mode): boolean;
}

// A blocking wait that can be abandoned at any moment.
export interface KernelWait {
  done: Promise<boolean>; // true: the lock is now held on our descriptor
  cancel(): void;
}

// Blocking flock(2) in a child process that inherits our descriptor: the lock
// it takes belongs to our open file description and outlives the child. A
// child costs no libuv pool thread (fs-ext's blocking flock would pin one of
// only four for the whole wait), and killing it interrupts the wait at once,
// so a timed-out or cancelled wait can never turn into a ghost holder.
export function waitStrategy(): 'child' | 'poll' {
  if (process.env.HOSTLOCK_WAIT === 'poll' || !FLOCK_BIN) return 'poll';
  return 'child';
}

export function kernelWait(file: Lockable, mode: Mode): KernelWait {
  return waitStrategy() === 'child' ? childWait(file, mode) : pollWait(file, mode);
}

// The waiter must die with us: an orphaned flock(1) would go on waiting and,
// when the lock frees, take it on a dead helper's behalf (briefly, until it
// exits, but long enough to be a ghost holder). util-linux setpriv asks the
// kernel to SIGKILL it when we die; probed once, on the first wait.
let pdeathWrapper: string | null | undefined;
function waiterCommand(mode: Mode): [string, string[]] {
  const flockArgs = [mode === 'shared' ? '-s' : '-x', '3'];
  if (pdeathWrapper === undefined) {
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: only a waiting helper needs it
    const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
    pdeathWrapper =
      setpriv && spawnSync(setpriv, ['--pdeathsig', 'KILL', 'true'], { stdio: 'ignore' }).status === 0 ? setpriv : null;
  }
  return pdeathWrapper ? [pdeathWrapper, ['--pdeathsig', 'KILL', FLOCK_BIN!, ...flockArgs]] : [FLOCK_BIN!, flockArgs];
}

function childWait(file: Lockable, mode: Mode): KernelWait {
  let child: ChildProcess | undefined;
  let cancelled = false;
  const done = new Promise<boolean>((resolve) => {
    // child_process is loaded on the first wait: most helpers never wait, and loading it costs a start ~5 ms.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily (see above)
    const { spawn } = require('node:child_process') as typeof import('node:child_process');
    const [cmd, args] = waiterCommand(mode);
    child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore', file.fd] });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(!cancelled && code === 0));
  });
  return {
    done,
    cancel() {
      cancelled = true;
      child?.kill('SIGKILL');
    },
  };
}

// Fallback where no flock(1) exists: non-blocking attempts with a capped backoff.
function pollWait(file: Lockable, mode: Mode): KernelWait {
  let timer: NodeJS.Timeout | undefined;
  let cancelled = false;
  let finish: (v: boolean) => void = () => {};
  const done = new Promise<boolean>((resolve) => {
    finish = resolve;
    let delay = 1;
    const attempt = () => {
      if (cancelled) return;
      let got: boolean;
      try {
        got = file.tryLock(mode);
      } catch {
        resolve(false);
        return;
      }
      if (got) resolve(true);
      else {
        timer = setTimeout(attempt, delay);
        delay = Math.min(delay * 2, 25);
      }
    };
    attempt();
  });
  return {
    done,
    cancel() {
      cancelled = true;
      if (timer) clearTimeout(timer);
      finish(false);
    },
  };
}
