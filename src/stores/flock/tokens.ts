// Fencing tokens of the local store: a counter file per lock, incremented
// under its own brief flock, so it survives restarts and strictly increases
// across every holder of the lock, shared holders included. The count is the
// file's size (a sparse file: growing it takes no data block, so a full file
// system still hands out tokens); a counter that holds a count as text, as
// earlier releases wrote it, goes on from that count. A counter that cannot be
// used fails the grant (an IoError): a token that did not increase would let
// a stale holder pass a fencing check.
import { fstatSync, ftruncateSync, readSync } from 'node:fs';
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
    const size = fstatSync(file.fd).size;
    const next = Math.max(size, size <= TEXT_BYTES ? textCount(file.fd) : 0) + 1;
    if (!Number.isSafeInteger(next)) throw new Error(`its count ${size} is out of range`);
    ftruncateSync(file.fd, next);
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

// A count written as text (`33`, space-padded to 20 bytes and a newline).
const TEXT_BYTES = 24;

function textCount(fd: number): number {
  const buf = Buffer.alloc(TEXT_BYTES);
  const n = readSync(fd, buf, 0, buf.length, 0);
  const text = buf.subarray(0, n).toString('latin1').replace(/\0/g, '').trim();
  if (text === '') return 0;
  const count = Number(text);
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`it holds ${JSON.stringify(text)}, not a count`);
  return count;
}
