// The directories hostlock keeps its files in: the per-user base, the
// default lock directory and the runtime directory for agent sockets, and
// the checks that make a user's lock directory safe to use.
import { accessSync, constants, lstatSync, mkdirSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, HostlockError, fromErrno } from '../core/errors';

function uid(): number {
  return process.getuid ? process.getuid() : 0;
}

export function baseDir(): string {
  return `/tmp/hostlock-${uid()}`;
}

export function defaultLockDir(): string {
  return process.env.HOSTLOCK_DIR || join(baseDir(), 'locks');
}

export function runtimeDir(): string {
  return process.env.HOSTLOCK_RUNTIME_DIR || join(baseDir(), 'run');
}

// A private directory that we create 0700 if missing, and trust only if it is
// ours and closed to others (a world-writable /tmp invites squatting).
export function ensurePrivateDir(dir: string): string {
  // The per-user base in /tmp must be ours as well: whoever owns it could swap
  // the directories inside it.
  const base = baseDir();
  if (dir.startsWith(base + '/')) ensurePrivateDir(base);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw fromErrno(err, dir, 'create the directory');
  }
  const st = lstatSync(dir);
  if (!st.isDirectory()) {
    throw new HostlockError(
      ErrorCode.LockDirUnusable,
      `${dir} is not a directory; remove it or set another directory`,
      { path: dir },
    );
  }
  if (st.uid !== uid() || (st.mode & 0o077) !== 0) {
    throw new HostlockError(
      ErrorCode.LockDirUnusable,
      `${dir} must be owned by uid ${uid()} with mode 0700 (it is uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}); ` +
        'fix it with chown/chmod or remove it',
      { path: dir },
    );
  }
  return dir;
}

// A lock directory named by the user must already exist and be writable; the
// default one is created private on first use. A named directory reached
// through a symlink is the user's own choice (the default one, in /tmp, must
// be no symlink: anyone could plant it): it is used by its real path, so that
// runs that name it through the link and runs that name it directly lock the
// same files under the same paths — one order for a batch, one key for the
// deadlock watch, one place in status and history.
export function checkLockDir(dir: string | undefined): string {
  if (!dir) {
    const d = defaultLockDir();
    return process.env.HOSTLOCK_DIR ? checkLockDir(d) : ensurePrivateDir(d);
  }
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      throw new HostlockError(
        ErrorCode.LockDirUnusable,
        `lock directory ${dir} does not exist; create it (mkdir -m 0700 ${dir}) or choose another`,
        { path: dir, errno: e.code },
      );
    }
    throw fromErrno(err, dir, 'use the lock directory');
  }
  if (!st.isDirectory()) {
    throw new HostlockError(ErrorCode.LockDirUnusable, `lock directory ${dir} is not a directory`, { path: dir });
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EROFS' ? 'is on a read-only file system' : 'is not writable by this user';
    throw new HostlockError(
      ErrorCode.LockDirUnusable,
      `lock directory ${dir} ${why}; choose a directory you can write to`,
      { path: dir, errno: e.code },
    );
  }
  try {
    return realpathSync.native(dir);
  } catch (err) {
    throw fromErrno(err, dir, 'use the lock directory');
  }
}

// A group-shared lock directory (setgid, group-writable) gets 0660 lock files
// so that a team on one bastion can lock the same names.
export function isSharedGroupDir(dir: string): boolean {
  try {
    const st = statSync(dir);
    return (st.mode & 0o2000) !== 0 && (st.mode & 0o020) !== 0;
  } catch {
    return false;
  }
}
