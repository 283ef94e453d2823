// Facts about processes read from /proc: start times (to tell a live process
// from a reused PID), owners, and the kernel's table of flock locks.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';

// This process's start time as the executable's shell read it from /proc
// (src/cli/sigign.ts), kept on the global object: each bundle of the
// executable has its own copy of this module.
const OWN_START = Symbol.for('hostlock.ownStartTime');
export function knowOwnStartTime(start: string): void {
  (globalThis as Record<symbol, unknown>)[OWN_START] = start;
}

// A value the executable's shell passed to this process as NAME=PID:VALUE
// (scripts/build.mjs): VALUE, taken out of the environment at once, so no
// command of ours inherits it. The PID makes a value inherited by another
// process worthless: undefined then, as when it is missing.
export function fromPrelude(name: string): string | undefined {
  const raw = process.env[name];
  if (raw === undefined) return undefined;
  delete process.env[name];
  const colon = raw.indexOf(':');
  return colon > 0 && Number(raw.slice(0, colon)) === process.pid ? raw.slice(colon + 1) : undefined;
}

// Field 22 of /proc/<pid>/stat, in clock ticks since boot; null if the process is gone.
export function processStartTime(pid: number): string | null {
  if (pid === process.pid) {
    const own = (globalThis as Record<symbol, unknown>)[OWN_START];
    if (typeof own === 'string') return own;
  }
  return readProcStat(pid)?.start ?? null; // a zombie holds no locks
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
        const [name, , uid] = line.split(':');
        if (name !== undefined && uid !== undefined) passwd.set(Number(uid), name);
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
// Read it only when needed: a read after ~50 ms without one stalls every flock on the
// machine for an RCU grace period (10–20 ms; bench/README.md has the figures).
export function readKernelLocks(): KernelLock[] | null {
  let text: string;
  try {
    text = readFileSync('/proc/locks', 'latin1');
  } catch {
    return null;
  }
  const out: KernelLock[] = [];
  for (const line of text.split('\n')) {
    const [, type, , access, pid, inode] = line.trim().split(/\s+/);
    if (inode === undefined || type === '->' || type !== 'FLOCK') continue;
    out.push({ pid: Number(pid), mode: access === 'WRITE' ? 'exclusive' : 'shared', inode });
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

export interface ProcStat {
  pid: number;
  ppid: number;
  sid: number;
  start: string; // field 22, as processStartTime gives it
}

// Parent, session and start time of a live process; null if it is gone or a zombie.
export function readProcStat(pid: number): ProcStat | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = rest[19];
  if (rest[0] === 'Z' || rest[0] === 'X' || start === undefined) return null;
  // rest[1] is field 4 (ppid), rest[3] field 6 (session).
  return { pid, ppid: Number(rest[1]), sid: Number(rest[3]), start };
}

// Every live process on the machine (as far as this process may see /proc).
export function allProcesses(): ProcStat[] {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  const out: ProcStat[] = [];
  for (const n of names) {
    const c = n.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const s = readProcStat(Number(n));
    if (s) out.push(s);
  }
  return out;
}

// Direct children of a process, from every one of its threads (a child belongs to the thread that forked it).
export function childrenOf(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'latin1').split(' ')) if (c) out.push(Number(c));
    } catch {
      /* thread gone */
    }
  }
  return out;
}

// The command line (NUL-separated, as the kernel keeps it), real uid and thread group of a process; null if gone.
export function processIdentity(pid: number): { cmdline: string; uid: number; tgid: number } | null {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    const uid = /^Uid:\s+(\d+)/m.exec(status);
    const tgid = /^Tgid:\s+(\d+)/m.exec(status);
    return uid && tgid ? { cmdline, uid: Number(uid[1]), tgid: Number(tgid[1]) } : null;
  } catch {
    return null;
  }
}

// The PID the kernel handed out last (to a process or a thread), from /proc/loadavg.
export function lastPid(): number | null {
  try {
    const n = Number(readFileSync('/proc/loadavg', 'latin1').trim().split(' ')[4]);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

let maxPid: number | undefined;
export function pidMax(): number {
  if (maxPid === undefined) {
    try {
      maxPid = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1').trim()) || 4194304;
    } catch {
      maxPid = 4194304;
    }
  }
  return maxPid;
}

// Clock ticks since boot now, on the scale of start times (USER_HZ is 100 on Linux).
export function bootTicksNow(): number {
  try {
    return Math.floor(Number(readFileSync('/proc/uptime', 'latin1').split(' ')[0]) * 100);
  } catch {
    return 0;
  }
}

// The live processes whose open file description holds a FLOCK lock on
// `inode` (a kernelInodeKey): /proc/<pid>/fdinfo/<fd> lists the locks of that
// description only, so a process that merely has the file open, or waits for
// it, is not one. This finds who keeps a lock taken by a process that is gone
// (/proc/locks still shows the taker's PID): a child that inherited it.
export function flockKeepers(inode: string): Array<{ pid: number; mode: KernelLock['mode'] }> {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  const out: Array<{ pid: number; mode: KernelLock['mode'] }> = [];
  for (const n of names) {
    const c = n.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${n}/fd`);
    } catch {
      continue; // gone, or another user's
    }
    for (const fd of fds) {
      let info: string;
      try {
        if (!readlinkSync(`/proc/${n}/fd/${fd}`).startsWith('/')) continue; // a pipe, socket or the like
        info = readFileSync(`/proc/${n}/fdinfo/${fd}`, 'latin1');
      } catch {
        continue;
      }
      if (!info.includes(inode)) continue;
      const lock = info.split('\n').find((l) => l.startsWith('lock:') && l.includes(' FLOCK ') && l.includes(inode));
      if (!lock || processStartTime(Number(n)) === null) continue;
      out.push({ pid: Number(n), mode: / WRITE /.test(lock) ? 'exclusive' : 'shared' });
      break;
    }
  }
  return out;
}

// A process's command line, its arguments joined by spaces; undefined if it is gone.
export function commandLine(pid: number): string | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.replace(/\0+$/, '').split('\0').join(' ').slice(0, 200) || undefined;
  } catch {
    return undefined;
  }
}

// HOSTLOCK_CONTROLLER names this controller in records (several simulated on one machine, or a container's name).
const controller = process.env.HOSTLOCK_CONTROLLER || hostname();

export function controllerName(): string {
  return controller;
}
