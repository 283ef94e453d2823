// Where a key's lock file lives and where its records are kept: a named lock
// keeps its holder and waiter records in hidden directories of its lock
// directory; a lock path given directly (the Python `Lock`) keeps them in the
// private runtime directory. Each record directory has one registry per process.
import { dirname, join } from 'node:path';
import type { LockKey } from '../../store/types';
import { statSync } from 'node:fs';
import { checkLockDir, ensurePrivateDir, isSharedGroupDir, runtimeDir } from '../../sys/paths';
import { HolderRegistry } from './holders';
import { turnstilePathFor } from './turnstile';

export interface Place {
  path: string;
  registry: HolderRegistry;
  waiters: HolderRegistry;
  groupShared: boolean;
}

const registries = new Map<string, HolderRegistry>();

// File system checks made once per turn of the event loop: the requests of
// one turn (a release and the grant it hands on, or a burst of tries) share
// them, as if each had looked when the turn began.
const seen = new Map<string, string | boolean>();

function once<T extends string | boolean>(key: string, look: () => T): T {
  const hit = seen.get(key);
  if (hit !== undefined) return hit as T;
  if (seen.size === 0) setImmediate(() => seen.clear());
  const value = look();
  seen.set(key, value);
  return value;
}

// The lock directory (the default one when omitted), checked usable (sys/paths.ts).
export function lockDir(dir?: string): string {
  return once(`dir:${dir ?? ''}`, () => checkLockDir(dir));
}

// A team directory (setgid, group-writable): its files are made for the group.
export function groupShared(dir: string): boolean {
  return once(`group:${dir}`, () => isSharedGroupDir(dir));
}

export function exists(path: string): boolean {
  return once(`exists:${path}`, () => statSync(path, { throwIfNoEntry: false }) !== undefined);
}

// This process has just made `path`: a look earlier in the turn is out of date.
export function made(path: string): void {
  if (seen.has(`exists:${path}`)) seen.set(`exists:${path}`, true);
}

export function registryOf(dir: string, group: boolean): HolderRegistry {
  let r = registries.get(dir);
  if (!r) registries.set(dir, (r = new HolderRegistry(dir, group ? 0o2770 : 0o700)));
  return r;
}

export function placeOf(key: LockKey): Place {
  const dir = dirname(key.id);
  const group = groupShared(dir);
  const named = key.name !== undefined;
  const base = named ? dir : ensurePrivateDir(runtimeDir());
  return {
    path: key.id,
    groupShared: group,
    registry: registryOf(join(base, named ? '.holders' : 'holders'), named && group),
    waiters: registryOf(join(base, named ? '.waiters' : 'waiters'), named && group),
  };
}

// A hidden file beside the lock file (like its turnstile): `.<file>.<what>`.
export function besideLock(lockPath: string, what: string): string {
  return turnstilePathFor(lockPath).replace(/\.turnstile$/, `.${what}`);
}
