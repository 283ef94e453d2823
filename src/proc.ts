// Facts about processes read from /proc: start times (to tell a live process
// from a reused PID), owners, and the kernel's table of flock locks.
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';

// Field 22 of /proc/<pid>/stat, in clock ticks since boot; null if the process is gone.
export function processStartTime(pid: number): string | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field 22 is rest[19].
  if (rest[0] === 'Z' || rest[0] === 'X') return null; // a zombie holds no locks
  return rest[19] ?? null;
}

// Stopped by a signal (SIGSTOP, ^Z) or a debugger: state T or t in /proc/<pid>/stat.
export function isStopped(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat[stat.lastIndexOf(')') + 2];
    return state === 'T' || state === 't';
  } catch {
    return false;
  }
}

export function isSameProcess(pid: number, startTime: string | undefined): boolean {
  const now = processStartTime(pid);
  return now !== null && (startTime === undefined || now === startTime);
}

let passwd: Map<number, string> | undefined;
export function userName(uid: number): string {
  if (!passwd) {
    passwd = new Map();
    try {
      for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const f = line.split(':');
        if (f.length > 2) passwd.set(Number(f[2]), f[0]);
      }
    } catch {
      /* no passwd: fall back to numbers */
    }
  }
  return passwd.get(uid) ?? String(uid);
}

export function processUser(pid: number): string | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? userName(Number(m[1])) : undefined;
  } catch {
    return undefined;
  }
}

let me: string | undefined;
export function currentUser(): string {
  if (me === undefined) {
    try {
      me = userInfo().username;
    } catch {
      me = String(process.getuid?.() ?? '?');
    }
  }
  return me;
}

export interface KernelLock {
  pid: number;
  mode: 'exclusive' | 'shared';
  inode: string; // "major:minor:inode" as /proc/locks prints it (hex major/minor)
}

// Granted FLOCK locks (waiters, marked "->", are skipped). Null when /proc/locks is unreadable.
export function readKernelLocks(): KernelLock[] | null {
  let text: string;
  try {
    text = readFileSync('/proc/locks', 'latin1');
  } catch {
    return null;
  }
  const out: KernelLock[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || f[1] === '->' || f[1] !== 'FLOCK') continue;
    out.push({ pid: Number(f[4]), mode: f[3] === 'WRITE' ? 'exclusive' : 'shared', inode: f[5] });
  }
  return out;
}

// The "major:minor:inode" key /proc/locks uses for a file with this st_dev and st_ino.
export function kernelInodeKey(dev: bigint, ino: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const hex = (n: bigint) => n.toString(16).padStart(2, '0');
  return `${hex(major)}:${hex(minor)}:${ino}`;
}
