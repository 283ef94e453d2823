// `hostlock flock`: util-linux flock(1), so that a script switches by one
// word. The file is opened as flock(1) opens it (O_RDONLY|O_NOCTTY|O_CREAT,
// 0666 less the umask; a directory read-only), locked with flock(2) on that
// very descriptor — or on a descriptor we were given, whose lock then stays
// with its owner's open file after we exit — and the command runs as flock(1)
// runs it, with its exit statuses and its silence. On top, and never at the
// cost of the lock: a holder record and history lines in the lock directory
// (so `hostlock status` names the holder) and a fencing token, HOSTLOCK_TOKEN.
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, openSync, readdirSync, readlinkSync, writeSync } from 'node:fs';
import { constants as os } from 'node:os';
import { join, resolve } from 'node:path';
import { EX, FLOCK_USAGE, parseFlockArgs, type FlockArgs } from './flockargs';
import { appendHistory } from '../stores/flock/journal';
import { historyRecordOf } from '../store/records';
import { controllerName, currentUser, kernelInodeKey, processIdentity, processStartTime } from '../sys/proc';
import { HolderRegistry, pathTag, type Keeper } from '../stores/flock/holders';
import { flockOnce, kernelWait, type Lockable } from '../stores/flock/lockfile';
import { type Mode } from '../core/mode';
import { checkLockDir, isSharedGroupDir } from '../sys/paths';
import type { HistoryEvent, Requester } from '../store/types';
import { nextToken } from '../stores/flock/tokens';
import { VERSION } from '../core/version';
import { whyUnrunnable } from '../sys/which';
import { isoTime } from '../core/time';

// flock(1)'s messages carry its name: a script's logs read the same.
const warn = (line: string) => process.stderr.write(`flock: ${line}\n`);

// flock(1) exits where it fails; here an error carries the status up.
class Exit extends Error {
  constructor(readonly status: number) {
    super(`exit ${status}`);
  }
}

// The descriptors our parent left us (beyond 0-2), for the command: a fork
// would pass them all. Node marks every descriptor close-on-exec at start, so
// its own are told apart by what they are: epoll and eventfd inodes, and the
// pipes it keeps both ends of.
let inherited: number[] = [];
function inheritedDescriptors(): number[] {
  const targets = new Map<number, string>();
  try {
    for (const f of readdirSync('/proc/self/fd')) {
      const n = Number(f);
      if (n < 3) continue;
      try {
        targets.set(n, readlinkSync(`/proc/self/fd/${f}`));
      } catch {
        /* the listing's own descriptor */
      }
    }
  } catch {
    return [];
  }
  const count = new Map<string, number>();
  for (const t of targets.values()) count.set(t, (count.get(t) ?? 0) + 1);
  return [...targets]
    .filter(([, t]) => !t.startsWith('anon_inode:') && !(t.startsWith('pipe:') && count.get(t)! > 1))
    .map(([n]) => n);
}

export async function flockCommand(argv: string[]): Promise<number> {
  inherited = inheritedDescriptors();
  const parsed = parseFlockArgs(argv);
  switch (parsed.kind) {
    case 'help':
      process.stdout.write(FLOCK_USAGE);
      return EX.ok;
    case 'version':
      process.stdout.write(`hostlock flock ${VERSION}\n`);
      return EX.ok;
    case 'error':
      warn(parsed.message);
      if (parsed.tryHelp) process.stderr.write("Try 'hostlock flock --help' for more information.\n");
      return parsed.status;
  }
  try {
    return await flock(parsed.args);
  } catch (err) {
    if (err instanceof Exit) return err.status;
    throw err;
  }
}

async function flock(a: FlockArgs): Promise<number> {
  let opened = a.file !== undefined ? openLockFile(a.file, 0) : undefined;
  let fd = opened?.fd ?? a.fd!;
  const started = process.hrtime.bigint();
  let waited = false;
  // A number our parent did not give us is no descriptor of its: one of Node's own may sit there.
  const given = a.file !== undefined || fd < 3 || inherited.includes(fd);
  for (;;) {
    const err = given ? flockOnce(fd, a.op) : 'EBADF';
    if (err === null) break;
    if (err === 'EWOULDBLOCK' || err === 'EAGAIN') {
      if (a.nonblock) {
        if (a.verbose) warn('failed to get lock');
        return a.conflictExitCode;
      }
      waited = true;
      const file: Lockable = { fd, tryLock: (m) => flockOnce(fd, m) === null };
      if (await waitForLock(file, a.op as Mode, a.timeout)) break;
      if (a.verbose) warn('timeout while waiting to get lock');
      return a.conflictExitCode;
    }
    // flock(2) emulated by fcntl (NFSv4) needs a descriptor open for writing.
    const retry = err === 'EIO' || err === 'EBADF';
    if (retry && opened && !(opened.flags & constants.O_RDWR) && a.op !== 'shared' && canReadWrite(a.file!)) {
      closeSync(opened.fd);
      opened = openLockFile(a.file!, constants.O_RDWR);
      fd = opened.fd;
      if (opened.flags & constants.O_RDWR) continue;
    }
    warn(`${a.file ?? fd}: ${strerror(err)}`);
    return err === 'ENOLCK' || err === 'ENOMEM' ? EX.osErr : EX.dataErr;
  }
  if (a.verbose) {
    const us = (process.hrtime.bigint() - started) / 1000n;
    say(`flock: getting lock took ${us / 1000000n}.${String(us % 1000000n).padStart(6, '0')} seconds\n`);
  }
  // A command that cannot start fails as flock(1)'s exec does, with the lock
  // taken and given back, and no holder record or history of a hold it never had.
  const why = a.command && whyUnrunnable(a.command[0]!);
  if (why) {
    warn(`failed to execute ${a.command![0]}: ${strerror(why === 'not found' ? 'ENOENT' : 'EACCES')}`);
    return EX.unavailable;
  }
  const record = a.op === 'unlock' ? forget(fd, a) : remember(fd, a, waited ? started : undefined);
  if (!a.command) return EX.ok;
  if (a.verbose) say(`flock: executing ${a.command[0]}\n`);
  const status = await runCommand(a, fd, record?.token);
  record?.release();
  return status;
}

// Verbose lines go to stdout, as flock(1)'s do, in order with the command's output.
function say(text: string): void {
  writeSync(1, text);
}

// open(2) as flock(1) does it, with its exit statuses on failure.
function openLockFile(path: string, flags: number): { fd: number; flags: number } {
  let fl = (flags || constants.O_RDONLY) | constants.O_NOCTTY | constants.O_CREAT;
  try {
    return { fd: openSync(path, fl, 0o666), flags: fl };
  } catch (err) {
    let code = (err as NodeJS.ErrnoException).code;
    // Linux refuses O_CREAT on a directory; a directory is locked read-only.
    if (code === 'EISDIR') {
      fl = constants.O_RDONLY | constants.O_NOCTTY;
      try {
        return { fd: openSync(path, fl), flags: fl };
      } catch (again) {
        code = (again as NodeJS.ErrnoException).code;
      }
    }
    warn(`cannot open lock file ${path}: ${strerror(code)}`);
    if (code === 'ENOMEM' || code === 'EMFILE' || code === 'ENFILE') throw new Exit(EX.osErr);
    if (code === 'EROFS' || code === 'ENOSPC') throw new Exit(EX.cantCreate);
    throw new Exit(EX.noInput);
  }
}

function canReadWrite(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

// A blocking wait in the kernel (a flock(1) child on our descriptor, as the
// lock engine waits), abandoned when the timeout expires.
async function waitForLock(file: Lockable, mode: Mode, timeout?: number): Promise<boolean> {
  for (;;) {
    const wait = kernelWait(file, mode);
    let expired = false;
    const timer =
      timeout === undefined
        ? undefined
        : setTimeout(() => {
            expired = true;
            wait.cancel();
          }, timeout * 1000);
    const got = await wait.done;
    clearTimeout(timer);
    if (got) return true;
    if (expired) return false;
    // The waiter could not wait (it failed to start, or was killed by someone else): look again.
    if (file.tryLock(mode)) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface HoldRecord {
  token: number;
  release(): void;
}

// What `hostlock status` and `history` show of a hold, best effort: a lock
// directory that cannot be used costs the records, never the lock or a word.
function remember(fd: number, a: FlockArgs, waitStarted?: bigint): HoldRecord | undefined {
  const place = placeOf(fd, a);
  if (!place) return undefined;
  const mode = a.op as Mode;
  const keeper = keeperOf(a);
  const who: Requester = {
    pid: keeper?.pid ?? process.pid,
    user: currentUser(),
    controller: controllerName(),
    task: (a.command ?? parentCommand() ?? []).join(' ').slice(0, 200) || undefined,
  };
  const token = nextToken(
    join(place.dir, `.flock-${pathTag(place.path)}.token`),
    place.groupShared,
    place.path,
    () => {},
  );
  const since = new Date();
  const file = place.registry.add(
    place.inode,
    place.path,
    undefined,
    { ...who, mode, since: isoTime(since), token },
    keeper,
  );
  const waited = waitStarted === undefined ? undefined : Number(process.hrtime.bigint() - waitStarted) / 1e9;
  history(place, { event: 'grant', key: { id: place.path }, mode, who, token, waited, at: since }, true);
  return {
    token,
    release() {
      // A descriptor of another process keeps its lock after we are gone: so does its record.
      if (keeper) return;
      place.registry.remove(file);
      history(place, { event: 'release', key: { id: place.path }, mode, who, token });
    },
  };
}

// -u on a descriptor we were given: its holder record goes with its lock.
function forget(fd: number, a: FlockArgs): undefined {
  const place = placeOf(fd, a);
  const keeper = keeperOf(a);
  if (!place || !keeper) return undefined;
  place.registry.removeKeptBy(place.inode, keeper.pid);
  const who = { pid: keeper.pid, user: currentUser(), controller: controllerName() };
  history(place, { event: 'release', key: { id: place.path }, who });
  return undefined;
}

interface Place {
  dir: string;
  groupShared: boolean;
  registry: HolderRegistry;
  path: string;
  inode: string;
}

function placeOf(fd: number, a: FlockArgs): Place | undefined {
  try {
    const dir = checkLockDir(undefined);
    const groupShared = isSharedGroupDir(dir);
    const path = a.file !== undefined ? resolve(a.file) : readlinkSync(`/proc/self/fd/${fd}`);
    if (!path.startsWith('/')) return undefined; // a pipe or socket: nothing a user could name
    const st = fstatSync(fd, { bigint: true });
    const registry = new HolderRegistry(join(dir, '.holders'), groupShared ? 0o2770 : 0o700);
    return { dir, groupShared, registry, path, inode: kernelInodeKey(st.dev, st.ino) };
  } catch {
    return undefined;
  }
}

// A descriptor we were given belongs to our parent (the shell): it keeps the lock.
function keeperOf(a: FlockArgs): Keeper | undefined {
  if (a.file !== undefined) return undefined;
  const start = processStartTime(process.ppid);
  return start === null ? undefined : { pid: process.ppid, start, fd: a.fd! };
}

function parentCommand(): string[] | undefined {
  const id = processIdentity(process.ppid);
  return id ? id.cmdline.split('\0').filter(Boolean) : undefined;
}

function history(place: Place, e: HistoryEvent, urgent = false): void {
  try {
    appendHistory(place.dir, historyRecordOf(e), place.groupShared, urgent);
  } catch {
    /* history is best effort */
  }
}

// The command, as flock(1) forks and runs it: it inherits the locked
// descriptor (unless -o), and its status is ours (128+N if killed by signal N).
// -F: flock(1) becomes the command; Node cannot exec, so the command holds
// the lock by itself, gets the signals sent to us, and we end as it ends.
async function runCommand(a: FlockArgs, fd: number, token: number | undefined): Promise<number> {
  const [file, ...args] = a.command!;
  // Each at its own number, as a fork would leave them.
  const pass = new Set(inherited);
  if (a.close) pass.delete(fd);
  else pass.add(fd);
  const stdio: Array<'inherit' | 'ignore' | number> = ['inherit', 'inherit', 'inherit'];
  const last = Math.max(2, ...pass);
  for (let i = 3; i <= last; i++) stdio.push(pass.has(i) ? i : 'ignore');
  const env = { ...process.env, ...(token ? { HOSTLOCK_TOKEN: String(token) } : {}) };
  return new Promise<number>((done) => {
    const child = spawn(file!, args, { stdio, env });
    const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
    const handlers = a.noFork
      ? (['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const).map((s) => [s, forward(s)] as const)
      : [];
    for (const [s, h] of handlers) process.on(s, h);
    child.on('error', (err: NodeJS.ErrnoException) => {
      warn(`failed to execute ${file}: ${strerror(err.code)}`);
      done(err.code === 'ENOMEM' ? EX.osErr : EX.unavailable);
    });
    child.on('exit', (status, signal) => {
      for (const [s, h] of handlers) process.off(s, h);
      if (signal && a.noFork) {
        // The shell sees what it would have seen of the command itself.
        process.once('exit', () => process.kill(process.pid, signal));
      }
      done(status ?? 128 + (signal ? ((os.signals as { [s: string]: number })[signal] ?? 0) : 0));
    });
  });
}

// glibc's strerror(3) texts for what open, flock and exec can say.
const STRERROR: { [code: string]: string } = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  E2BIG: 'Argument list too long',
  ENOEXEC: 'Exec format error',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  EWOULDBLOCK: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENODEV: 'No such device',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  ENFILE: 'Too many open files in system',
  EMFILE: 'Too many open files',
  ETXTBSY: 'Text file busy',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ENAMETOOLONG: 'File name too long',
  ENOLCK: 'No locks available',
  ELOOP: 'Too many levels of symbolic links',
  EOPNOTSUPP: 'Operation not supported',
  ENOTSUP: 'Operation not supported',
  EINTR: 'Interrupted system call',
  EDQUOT: 'Disk quota exceeded',
};

function strerror(code: string | undefined): string {
  return (code && STRERROR[code]) || code || 'Unknown error';
}
