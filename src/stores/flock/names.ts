// Lock names as file names: the injective encoding of a name into a lock
// directory, and back.
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ErrorCode, HostlockError } from '../../core/errors';

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
