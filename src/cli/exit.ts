// Exit codes of the `hostlock` command (listed in --help) and the one place
// that turns a command's outcome or error into one.
import { type HostlockError, sharedClass } from '../core/errors';

export const EXIT = {
  ok: 0,
  conflict: 1, // the default; --conflict-exit-code changes it (like flock -E)
  failure: 1, // anything else that went wrong, with a one-line message
  usage: 64,
  unavailable: 69, // run: the command cannot be started (EX_UNAVAILABLE, as flock(1))
  osError: 71, // run: out of resources to start the command (EX_OSERR, as flock(1))
  lockUnusable: 73,
  lockLost: 75, // run: the hold ended under the command (EX_TEMPFAIL)
  signalBase: 128, // + the signal's number when the command was killed
  interrupted: 130, // the wait was cancelled by SIGINT (SIGTERM: 143, SIGHUP: 129)
} as const;

export const EXIT_HELP = `Exit codes:
  ${EXIT.ok}      success (run: the command's own status)
  ${EXIT.conflict}      run: the lock is held by another (--nonblock) or --timeout expired; see --conflict-exit-code
  ${EXIT.usage}     usage error
  ${EXIT.unavailable}     run: the command cannot be started (not found, not executable, a directory), as flock(1)
        exits when exec fails; checked before locking, so nothing was locked or recorded
  ${EXIT.osError}     run: out of resources to start the command (as flock(1))
  ${EXIT.lockUnusable}     the lock directory, lock file or lock store is unusable (missing, unwritable; a lock file
        that is a symlink or not a regular file; a server store unreachable). A --dir that is a
        symlink is followed: its real directory is used and shown, the same locks as by its path
  ${EXIT.lockLost}     run: the lock was lost while the command ran (the command was signalled; see --on-lost)
  ${EXIT.signalBase}+N  run: the command was killed by signal N, or the wait was ended by signal N
        (SIGHUP 129, SIGINT 130, SIGTERM 143)
flock: flock(1)'s statuses (the command's own; 1 or -E on conflict or timeout; 64 usage,
  65 not lockable, 66 cannot open, 69 cannot execute, 71 out of resources, 73 cannot create):
  see hostlock flock --help`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}
// The fast path's bundle and the full command line's each have a copy.
sharedClass(UsageError, 'UsageError');

// A command resolves to its exit code, or to -1 to leave the process to its
// event loop (`serve` and `agent` end when their clients and owner are gone).
export type Command = () => Promise<number>;

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  // hostlock's own errors and failed system calls on the lock's files.
  if ((err as HostlockError | NodeJS.ErrnoException | undefined)?.code !== undefined) return EXIT.lockUnusable;
  return EXIT.failure;
}

// What a command prints on stderr for an error that ends it.
export function errorReport(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return `hostlock: ${message}\n${err instanceof UsageError ? 'Try: hostlock --help\n' : ''}`;
}

// Ends a one-shot command (`flock`, `run`) with its status as soon as it has
// one. The 'exit' handlers still run (the history, the code cache), and
// nothing written is lost: stdout and stderr are synchronous on Linux, to
// files, pipes and terminals alike. What is skipped is Node's teardown of an
// event loop with nothing left in it, a millisecond or two of every start.
export function exitNow(code: number): never {
  process.exit(code);
}

// Runs a command as the process's main.
export function runMain(command: Command): void {
  command().then(
    (code) => {
      if (code >= 0) process.exitCode = code;
    },
    (err) => {
      process.stderr.write(errorReport(err));
      process.exitCode = exitCodeFor(err);
    },
  );
}
