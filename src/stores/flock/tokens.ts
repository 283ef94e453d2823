// Fencing tokens of the local store: a counter file per lock, incremented
// under its own brief flock, so it survives restarts and strictly increases
// across every holder of the lock, shared holders included. 0 when the
// counter cannot be had (the lock is never refused for want of a token).
import { readSync, writeSync } from 'node:fs';
import { LockFile } from './lockfile';
import { log } from '../../core/log';

export function nextToken(
  counterPath: string,
  groupShared: boolean,
  lockPath: string,
  warn: (message: string) => void = (m) => log.warn(m, { path: counterPath }),
): number {
  let file: LockFile;
  try {
    file = LockFile.open(counterPath, groupShared);
  } catch (err) {
    warn(`no fencing token for ${lockPath}: ${(err as Error).message}`);
    return 0;
  }
  try {
    file.lockBlocking();
    const buf = Buffer.alloc(24);
    const n = readSync(file.fd, buf, 0, buf.length, 0);
    const next = (Number.parseInt(buf.subarray(0, n).toString('latin1').trim() || '0', 10) || 0) + 1;
    const text = Buffer.from(String(next).padEnd(20, ' ') + '\n');
    writeSync(file.fd, text, 0, text.length, 0);
    return next;
  } catch (err) {
    warn(`no fencing token for ${lockPath}: ${(err as Error).message}`);
    return 0;
  } finally {
    file.close();
  }
}
