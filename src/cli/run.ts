// `hostlock run NAME -- CMD`: flock(1) with names, timeouts and holder records.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { errorReport, EXIT, exitCodeFor, UsageError } from './exit';
import { log } from '../core/log';
import { takeIfFree } from '../policy/atonce';
import { releaseAndRecord } from '../policy/history';
import { LockManager } from '../policy/manager';
import type { AcquireRequest, Cancellable, Hold } from '../policy/requests';
import { type Target, targetForName } from '../policy/targets';
import { inheritedIgnored } from './sigign';
import { closeStores } from '../stores';
import { whyUnrunnable, type Unrunnable } from '../sys/which';

// The signals a shell user sends to a job: forwarded to the command while it
// runs, ending the wait (128+N) before; left ignored, for hostlock and its
// command, when hostlock inherited them ignored (nohup, a background job).
const JOB_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM'] as const;
// Ignored on entry, these stay ignored for the command too (Node would reset them).
const KEEP_IGNORED = ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGTERM'] as const;

export const DEFAULT_LOST_GRACE = 10;

export interface RunOptions {
  name: string;
  dir?: string;
  backend?: string;
  shared: boolean;
  slots?: number;
  timeout?: number;
  nonblock: boolean;
  conflictExitCode: number;
  command: string[];
  quiet: boolean;
  // What the command gets when the hold is lost under it, and how long it has
  // before SIGKILL.
  onLost?: NodeJS.Signals;
  lostGrace?: number;
}

// A signal option's value (TERM, SIGTERM, 15) as Node's name, or undefined.
export function signalName(v: string): NodeJS.Signals | undefined {
  const sigs = constants.signals as Record<string, number>;
  if (/^[0-9]+$/.test(v)) return Object.keys(sigs).find((k) => sigs[k] === Number(v)) as NodeJS.Signals | undefined;
  const name = v.toUpperCase().startsWith('SIG') ? v.toUpperCase() : `SIG${v.toUpperCase()}`;
  return name in sigs ? (name as NodeJS.Signals) : undefined;
}

export async function runLocked(o: RunOptions): Promise<number> {
  const [file, ...args] = o.command;
  if (file === undefined) throw new UsageError('give the command after --, e.g. hostlock run db -- ./migrate.sh');
  let target: Target;
  try {
    target = targetForName(o.name, o.dir, o.backend);
  } catch (err) {
    process.stderr.write(errorReport(err));
    return exitCodeFor(err);
  }
  // A command that cannot start is told after the usage errors, before anything is locked or recorded.
  const why = whyUnrunnable(file);
  if (why) {
    process.stderr.write(`hostlock: cannot run ${file}: ${unrunnableAdvice(file, why)}; nothing was locked\n`);
    await closeStores();
    return EXIT.unavailable;
  }
  const request: AcquireRequest = {
    target,
    mode: o.shared ? 'shared' : 'exclusive',
    slots: o.slots,
    wait: !o.nonblock,
    timeout: o.timeout,
    prefix: o.name,
    owner: { task: o.command.join(' ').slice(0, 200) },
    notifyEvery: 5,
    onLost: (_hold, reason) => lostHold(reason),
    onWaiting: ({ waited, holders, position }) => {
      if (o.quiet) return;
      const who = holders
        .map((h) => {
          const what = h.playbook || h.task || h.command;
          return `${h.user}@${h.controller} pid ${h.pid}${what ? ` (${what})` : ''}`;
        })
        .join(', ');
      const place = position ? ` (${ordinal(position)} in queue)` : '';
      process.stderr.write(
        `hostlock: waiting ${waited.toFixed(0)}s${place} for ${o.name}${who ? ` held by ${who}` : ''}\n`,
      );
    },
  };
  // Inherited as ignored: ignored for good (a handler that does nothing keeps
  // Node's default action away); the command gets them ignored too.
  const ignored = KEEP_IGNORED.filter((s) => inheritedIgnored(s));
  const ignore = () => {};
  for (const s of ignored) process.on(s, ignore);
  const live = JOB_SIGNALS.filter((s) => !ignored.includes(s));
  // One handler per job signal for as long as hostlock runs: while it waits,
  // the signal cancels the wait; once the command runs, it goes to the
  // command. (With no handler in between, even for an instant, Node would give
  // the signal back its default action, and hostlock would die of it.)
  let caught: NodeJS.Signals | undefined;
  let command: ChildProcess | undefined;
  let waiting: Cancellable | undefined;
  const jobHandlers = live.map((s) => {
    const h = () => {
      if (command) {
        command.kill(s);
        return;
      }
      caught ??= s;
      waiting?.cancel();
    };
    process.on(s, h);
    return [s, h] as const;
  });
  const dropJobHandlers = () => {
    for (const [s, h] of jobHandlers) process.off(s, h);
  };
  let lost: string | undefined;
  let onLost: (() => void) | undefined;
  let hold: Hold;
  let release: () => void;
  let free: Hold | null;
  try {
    free = takeIfFree(request);
  } catch (err) {
    dropJobHandlers();
    process.stderr.write(errorReport(err));
    return exitCodeFor(err);
  }
  if (free) {
    hold = free;
    release = () => releaseAndRecord(free);
  } else {
    const manager = new LockManager();
    const attempt = manager.acquire(request);
    waiting = attempt;
    let out;
    try {
      out = await attempt.outcome;
    } catch (err) {
      dropJobHandlers();
      process.stderr.write(errorReport(err));
      await closeStores();
      return exitCodeFor(err);
    }
    if (out.acquired && out.hold && caught) {
      // The grant and the signal crossed: the user asked to stop, the command does not start.
      manager.release(out.hold);
      out = { ...out, acquired: false, reason: 'cancelled' as const };
    }
    if (!out.acquired || !out.hold) {
      dropJobHandlers();
      if (!o.quiet && out.reason !== 'cancelled') {
        const who = out.holders.map((h) => `${h.user}@${h.controller} pid ${h.pid}`).join(', ') || 'another process';
        process.stderr.write(
          `hostlock: ${o.name} is held by ${who}${out.reason === 'timeout' ? `; gave up after ${out.waited.toFixed(1)}s` : ''}\n`,
        );
      }
      manager.shutdown();
      await closeStores();
      if (out.reason === 'cancelled') return caught ? EXIT.signalBase + osSignal(caught) : EXIT.interrupted;
      return o.conflictExitCode;
    }
    const held = out.hold;
    hold = held;
    release = () => {
      manager.release(held);
      manager.shutdown();
    };
  }
  const fd = hold.held.fd;
  const spec = commandLine(file, args, fd === undefined, ignored);
  if (typeof spec === 'number') {
    dropJobHandlers();
    release();
    await closeStores();
    return spec;
  }
  const signal = o.onLost ?? 'SIGTERM';
  const grace = o.lostGrace ?? DEFAULT_LOST_GRACE;
  const code = await new Promise<number>((resolve) => {
    // Local store: like flock(1), the command inherits the lock (as its fd 3),
    // so the lock lasts as long as the command. Server store: the lock lives
    // in hostlock's session or lease, so the command dies with hostlock
    // (SIGKILL from the kernel, see commandLine).
    const child = spawn(spec.file, spec.args, {
      stdio: fd === undefined ? 'inherit' : ['inherit', 'inherit', 'inherit', fd],
      env: {
        ...process.env,
        HOSTLOCK_TOKEN: String(hold.held.token),
        ...(hold.held.slot !== undefined ? { HOSTLOCK_SLOT: String(hold.held.slot) } : {}),
      },
    });
    command = child;
    let killer: NodeJS.Timeout | undefined;
    onLost = () => {
      process.stderr.write(
        `hostlock: sending ${signal} to the command (pid ${child.pid}); SIGKILL if it still runs in ${grace}s\n`,
      );
      child.kill(signal);
      killer = setTimeout(() => {
        process.stderr.write(`hostlock: the command still runs ${grace}s after ${signal}: sending SIGKILL\n`);
        child.kill('SIGKILL');
      }, grace * 1000);
    };
    if (lost !== undefined) onLost();
    child.on('error', (err: NodeJS.ErrnoException) => {
      // It was there when checked: gone or changed since, or the system is out of resources.
      process.stderr.write(
        `hostlock: cannot run ${file}: ${err.code ?? err.message}; the lock ${o.name} is released\n`,
      );
      resolve(err.code === 'ENOMEM' || err.code === 'EAGAIN' ? EXIT.osError : EXIT.unavailable);
    });
    child.on('exit', (status, sig) => {
      clearTimeout(killer);
      resolve(status ?? EXIT.signalBase + (sig ? osSignal(sig) : 0));
    });
  });
  // The command has ended. A job signal from now on goes to nobody: hostlock
  // releases, records and exits with the command's status. (Signals ignored on
  // entry stay ignored to the end.)
  if (lost !== undefined) {
    // Only the store may be slow now: a job signal ends hostlock as it would by default.
    dropJobHandlers();
    process.stderr.write(
      `hostlock: the command ended (status ${code}) after the lock ${o.name} was lost: exit ${EXIT.lockLost}\n`,
    );
    release();
    // The store may be the reason (frozen, unreachable): do not wait on it for long.
    await Promise.race([closeStores(), new Promise((r) => setTimeout(r, 2000).unref())]);
    setTimeout(() => process.exit(EXIT.lockLost), 2000).unref();
    return EXIT.lockLost;
  }
  release();
  await closeStores();
  log.debug('command finished', { code });
  return code;

  function lostHold(reason: string): void {
    if (lost !== undefined) return;
    lost = reason;
    process.stderr.write(
      `hostlock: LOST the lock ${o.name}: ${reason}; another holder may be inside it now, so the command must stop\n`,
    );
    onLost?.();
  }
}

// How to start the command: as it is, or through a small shell (and, on a
// server store, setpriv) that first (1) asks the kernel to SIGKILL it when
// hostlock dies (PR_SET_PDEATHSIG, which survives exec; libuv forks from the
// main thread, whose death is hostlock's), (2) checks hostlock is still its
// parent (hostlock may have died before (1)), (3) ignores the signals hostlock
// inherited ignored (libuv resets every signal in the child), then execs it.
// A number: the exit status (the command cannot be found).
function commandLine(
  file: string,
  args: string[],
  tied: boolean,
  ignored: readonly NodeJS.Signals[],
): { file: string; args: string[] } | number {
  if (!tied && ignored.length === 0) return { file, args };
  // Checked again: through the shell, an exec that fails would look like the command's own 126/127.
  const why = whyUnrunnable(file);
  if (why) {
    process.stderr.write(`hostlock: cannot run ${file}: ${unrunnableAdvice(file, why)}\n`);
    return EXIT.unavailable;
  }
  const script =
    'p=$1 t=$2; shift 2; [ -z "$p" ] || [ "$PPID" = "$p" ] || exit 137; [ -z "$t" ] || trap "" $t; exec "$@"';
  const traps = ignored.map((s) => s.slice(3)).join(' ');
  const sh = ['/bin/sh', '-c', script, 'hostlock', tied ? String(process.pid) : '', traps, file, ...args];
  if (!tied) return { file: sh[0]!, args: sh.slice(1) };
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
  if (setpriv) return { file: setpriv, args: ['--pdeathsig', 'KILL', '--', ...sh] };
  // No util-linux setpriv: the same prctl(2) from Python.
  const py = 'import ctypes,os,sys; ctypes.CDLL(None).prctl(1, 9, 0, 0, 0); os.execv(sys.argv[1], sys.argv[1:])';
  return { file: 'python3', args: ['-I', '-S', '-c', py, ...sh] };
}

function unrunnableAdvice(file: string, why: Unrunnable): string {
  if (why === 'a directory') return 'is a directory';
  if (why === 'not executable') return `not executable; chmod +x it or run it with its interpreter (sh ${file})`;
  return file.includes('/')
    ? 'no such file; check the path'
    : 'no such command on PATH; check its spelling, install it or give its path';
}

// 1st, 2nd, 3rd, 4th ... 11th, 12th, 13th, 21st.
export function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? 'th' : (({ 1: 'st', 2: 'nd', 3: 'rd' } as Record<number, string>)[n % 10] ?? 'th');
  return `${n}${suffix}`;
}

function osSignal(sig: NodeJS.Signals): number {
  return (constants.signals as Record<string, number>)[sig] ?? 0;
}

// A name with a slash, or starting with `.` or `~`, is a path: `hostlock run` locks names,
// and a path would silently name another file than the one its user means.
export function isPathLike(name: string): boolean {
  return name.includes('/') || name.startsWith('.') || name.startsWith('~');
}

export function pathNameRefused(name: string): string {
  return `'${name}' is a path, not a lock name: hostlock run locks names in its lock directory; to lock this file itself use hostlock flock ${name} CMD… (flock(1)'s command line)`;
}
