// Writer preference across processes. flock(2) grants a shared lock whenever
// only shared locks are held, so a stream of overlapping readers in other
// processes can keep an exclusive waiter out forever. Beside each lock file a
// hidden turnstile file (`.<file>.turnstile`) fixes that among hostlock users:
// a writer that must wait holds the turnstile exclusive until it has the lock,
// and a reader passes the turnstile (shared, briefly) before it takes the lock,
// so new readers queue behind a waiting writer. The turnstile is a fairness
// aid, never a safety device: exclusion lives in the lock file alone, where
// flock(1) and fcntl.flock users still meet us, and a turnstile that cannot be
// opened (read-only directory, planted symlink) only costs the fairness.
import { basename, dirname, join } from 'node:path';
import { LockFile } from './lockfile';
import { type Mode } from '../../core/mode';
import { log } from '../../core/log';

const MAX_FILE = 255;

// Hidden, so `status`/`list` (which skip dot files) never show it, and outside
// the name encoding (which never yields a leading '.').
export function turnstilePathFor(lockPath: string): string {
  const base = basename(lockPath);
  const plain = `.${base}.turnstile`;
  if (Buffer.byteLength(plain) <= MAX_FILE) return join(dirname(lockPath), plain);
  // crypto is loaded only for such names: loading it costs every helper start ~4 ms.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily (see above)
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  return join(dirname(lockPath), `.${createHash('sha256').update(base).digest('hex')}.turnstile`);
}

// Opens the turnstile of a lock file, or undefined where it cannot be had.
// HOSTLOCK_TURNSTILE=off turns it off (plain flock semantics; the starvation test's control).
export function openTurnstile(lockPath: string, groupShared: boolean): LockFile | undefined {
  if (process.env.HOSTLOCK_TURNSTILE === 'off') return undefined;
  const path = turnstilePathFor(lockPath);
  try {
    return LockFile.open(path, groupShared);
  } catch (err) {
    log.debug(`no turnstile for ${lockPath}: ${(err as Error).message}`, { path });
    return undefined;
  }
}

// Waits for a lock of the given mode on a file until held (true) or abandoned (false).
export type WaitFor = (file: LockFile, mode: Mode) => Promise<boolean>;

// A reader about to wait: wait until no writer stands at the turnstile, so
// that the reader queues behind a waiting writer, then go for the lock
// without looking at the turnstile again.
export async function passTurnstile(lockPath: string, groupShared: boolean, waitFor: WaitFor): Promise<void> {
  const gate = openTurnstile(lockPath, groupShared);
  if (!gate) return;
  try {
    await waitFor(gate, 'shared');
  } finally {
    gate.close();
  }
}

// A writer about to wait: take the turnstile, so that no new reader of another
// process gets in meanwhile. The caller closes the returned gate once it holds
// the lock (or gives up); undefined where the turnstile cannot be had.
export async function closeTurnstile(
  lockPath: string,
  groupShared: boolean,
  waitFor: WaitFor,
): Promise<LockFile | undefined> {
  const gate = openTurnstile(lockPath, groupShared);
  if (!gate) return undefined;
  let got: boolean;
  try {
    got = gate.tryLock('exclusive') || (await waitFor(gate, 'exclusive'));
  } catch {
    got = false;
  }
  if (got) return gate;
  gate.close();
  return undefined;
}

// True when no writer waits at the turnstile: a reader may go on to the lock.
export function turnstileOpen(lockPath: string, groupShared: boolean): boolean {
  const gate = openTurnstile(lockPath, groupShared);
  if (!gate) return true;
  try {
    return gate.tryLock('shared');
  } catch {
    return true;
  } finally {
    gate.close();
  }
}
