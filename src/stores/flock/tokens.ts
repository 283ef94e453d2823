// Fencing tokens of the local store: a counter file per lock, incremented
// under its own brief flock, so it survives restarts and strictly increases
// across every holder of the lock, shared holders included. A counter that
// cannot be read or written fails the grant (an IoError): a token that did
// not increase would let a stale holder pass a fencing check.
import { readSync, writeSync } from 'node:fs';
import { ErrorCode, HostlockError } from '../../core/errors';
import { LockFile } from './lockfile';

// `bestEffort`: a caller whose records are best effort (the flock command)
// hears of a failure there and gets token 0 instead of the error.
export function nextToken(
  counterPath: string,
  groupShared: boolean,
  lockPath: string,
  bestEffort?: (message: string) => void,
): number {
  try {
    return increment(counterPath, groupShared);
  } catch (err) {
    const e = tokenError(counterPath, lockPath, err);
    if (!bestEffort) throw e;
    bestEffort(e.message);
    return 0;
  }
}

function increment(counterPath: string, groupShared: boolean): number {
  const file = LockFile.open(counterPath, groupShared);
  try {
    file.lockBlocking();
    const buf = Buffer.alloc(24);
    const n = readSync(file.fd, buf, 0, buf.length, 0);
    const text = buf.subarray(0, n).toString('latin1').trim();
    const last = text === '' ? 0 : Number(text);
    if (!Number.isSafeInteger(last) || last < 0) throw new Error(`it holds ${JSON.stringify(text)}, not a count`);
    const next = last + 1;
    const out = Buffer.from(String(next).padEnd(20, ' ') + '\n');
    if (writeSync(file.fd, out, 0, out.length, 0) !== out.length) throw new Error('a short write');
    return next;
  } finally {
    file.close();
  }
}

function tokenError(counterPath: string, lockPath: string, err: unknown): HostlockError {
  return new HostlockError(
    ErrorCode.IoError,
    `no fencing token for ${lockPath}, so it was not taken: its counter ${counterPath} cannot be used ` +
      `(${(err as Error).message}); make the lock directory writable with free space, or, if the counter ` +
      'is damaged, replace it with a number above every token handed out so far',
    { path: lockPath, counter: counterPath },
  );
}
