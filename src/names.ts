// Where locks live: the name-to-file encoding and the private directories.
import { accessSync, constants, lstatSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ErrorCode, HostlockError, fromErrno } from './errors';

const SAFE = /^[A-Za-z0-9_.-]$/;
const MAX_FILE = 255;
export const LOCK_SUFFIX = '.lock';

// Injective and contained: every byte outside [A-Za-z0-9_.-] (and a leading
// '.') becomes %XX, so '/', NUL and '..' cannot survive. A name too long for
// one file name keeps a readable head and adds '~' + SHA-256 of the whole
// name; '~' never appears in a plain encoding, so the two forms cannot meet.
export function encodeLockName(name: string): string {
  if (name.length === 0) throw new HostlockError(ErrorCode.InvalidParams, 'a lock name cannot be empty');
  const bytes = Buffer.from(name, 'utf8');
  let out = '';
  for (const [i, byte] of bytes.entries()) {
    const ch = String.fromCharCode(byte);
    out +=
      byte < 0x80 && SAFE.test(ch) && !(i === 0 && ch === '.')
        ? ch
        : '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  if (out.length + LOCK_SUFFIX.length <= MAX_FILE) return out;
  let head = out.slice(0, 120);
  const cut = head.lastIndexOf('%');
  if (cut > head.length - 3) head = head.slice(0, cut); // never split an escape
  // crypto is loaded only for such names: loading it costs every helper start ~5 ms.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily (see above)
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  return `${head}~${createHash('sha256').update(bytes).digest('hex')}`;
}

// A hashed name's lock file keeps the whole name as its content, so that
// `status` can show it when nobody holds the lock.
export function isHashedStem(stem: string): boolean {
  return stem.includes('~');
}

// The name a lock file stands for: decoded from a plain stem, or read from a
// hashed one's content and accepted only if it hashes to the stem; else null.
export function lockNameOf(path: string): string | null {
  const stem = basename(path, LOCK_SUFFIX);
  if (!isHashedStem(stem)) return decodeLockName(stem);
  let content: Buffer;
  try {
    content = readFileSync(path);
  } catch {
    return null;
  }
  const name = content.toString('utf8');
  return name.length > 0 && encodeLockName(name) === stem ? name : null;
}

// The inverse for plain encodings; null for hashed ones (see lockNameOf).
export function decodeLockName(stem: string): string | null {
  if (isHashedStem(stem)) return null;
  try {
    return Buffer.from(
      stem.replace(/%([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))),
      'latin1',
    ).toString('utf8');
  } catch {
    return null;
  }
}

export function lockPathFor(dir: string, name: string): string {
  return join(dir, encodeLockName(name) + LOCK_SUFFIX);
}

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
// default one is created private on first use.
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
  return dir;
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
