// Loads one of the executable's own bundles (dist/run.js, dist/flock.js, …)
// as require() would, with a V8 code cache beside it: a start that finds the
// cache skips compiling the code an earlier start ran, a few milliseconds of
// every `hostlock flock` and `hostlock run` (Node 20 has no compile cache of
// its own to turn on).
//
// The cache is one file per bundle file in the user's private directory
// (/tmp/hostlock-UID/cache, 0700, checked as the lock directory's parent is),
// written once, at the exit of a start that found none it could use. Its
// first line names the bundle file (path, inode, size, change time) and the
// Node that made it: V8 itself checks only the source's length and its own
// version and flags, so a bundle replaced by another of the same length must
// not meet the old code. A cache that is not ours, not private, stale or
// refused by V8 is ignored and rewritten; a directory that cannot be used
// leaves the start as it would be without a cache, as HOSTLOCK_CODE_CACHE=0
// does.
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Script } from 'node:vm';
import { baseDir, ensurePrivateDir } from '../sys/paths';

type Loaded = { exports: unknown };

// The bundles this process loaded, by file.
const loaded = new Map<string, Loaded>();

// `name`: a bundle beside the executable's own (scripts/build.mjs puts them
// there). It runs as require() runs a CommonJS file, with the executable's own
// require, which resolves from the same directory: node:module, for its
// wrapper and a require of the bundle's own, would cost a third of a
// millisecond to load.
export function loadBundle<T>(name: string): T {
  const file = join(__dirname, `${name}.js`);
  const known = loaded.get(file);
  if (known) return known.exports as T;
  const { source, key } = readBundle(file);
  const cachePath = join(baseDir(), 'cache', `${basename(file)}-${pathHash(file)}.v8`);
  const cached = key ? readCache(cachePath, key) : undefined;
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n});`;
  const script = new Script(wrapped, { filename: file, cachedData: cached });
  const m: Loaded = { exports: {} };
  loaded.set(file, m);
  if (key && (!cached || script.cachedDataRejected)) {
    process.once('exit', () => writeCache(cachePath, key, script));
  }
  const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
  wrapper.call(m.exports, m.exports, require, m, file, dirname(file));
  return m.exports as T;
}

// FNV-1a of the bundle's path: each installed copy (the npm one, a
// collection's) keeps a cache of its own instead of overwriting another's.
function pathHash(file: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < file.length; i++) h = Math.imul(h ^ file.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

// The bundle's source and, unless turned off, its cache key, from one open
// file. The build writes ASCII only, so the bytes are decoded as latin1: one
// read of the known size, no UTF-8 decoding.
function readBundle(file: string): { source: string; key?: string } {
  const fd = openSync(file, 'r');
  try {
    const st = fstatSync(fd, { bigint: true });
    const source = readWhole(fd, Number(st.size)).toString('latin1');
    if (process.env.HOSTLOCK_CODE_CACHE === '0') return { source };
    return { source, key: `${file} ${st.ino} ${st.size} ${st.ctimeNs} ${process.version} ${process.arch}\n` };
  } finally {
    closeSync(fd);
  }
}

// `size` bytes from the start of `fd`, or fewer if the file is shorter.
function readWhole(fd: number, size: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let n = 0;
  while (n < size) {
    const got = readSync(fd, buf, n, size - n, n);
    if (got === 0) break;
    n += got;
  }
  return buf.subarray(0, n);
}

function readCache(path: string, key: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (st.uid !== (process.getuid?.() ?? 0) || (st.mode & 0o077) !== 0) return undefined;
    const data = readWhole(fd, st.size);
    const head = Buffer.byteLength(key);
    if (data.length <= head || data.toString('utf8', 0, head) !== key) return undefined;
    return data.subarray(head);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function writeCache(path: string, key: string, script: Script): void {
  try {
    ensurePrivateDir(dirname(path));
    const tmp = `${path}.${process.pid}`;
    writeFileSync(tmp, Buffer.concat([Buffer.from(key), script.createCachedData()]), { mode: 0o600 });
    renameSync(tmp, path);
  } catch {
    // No cache this time: the next start compiles as this one did.
    rmSync(`${path}.${process.pid}`, { force: true });
  }
}
