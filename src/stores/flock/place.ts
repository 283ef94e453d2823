// Where a key's lock file lives and where its records are kept: a named lock
// keeps its holder and waiter records in hidden directories of its lock
// directory; a lock path given directly (the Python `Lock`) keeps them in the
// private runtime directory. Each record directory has one registry per process.
import { dirname, join } from 'node:path';
import type { LockKey } from '../../store/types';
import { ensurePrivateDir, isSharedGroupDir, runtimeDir } from '../../sys/paths';
import { HolderRegistry } from './holders';
import { turnstilePathFor } from './turnstile';

export interface Place {
  path: string;
  registry: HolderRegistry;
  waiters: HolderRegistry;
  groupShared: boolean;
}

const registries = new Map<string, HolderRegistry>();

export function registryOf(dir: string, group: boolean): HolderRegistry {
  let r = registries.get(dir);
  if (!r) registries.set(dir, (r = new HolderRegistry(dir, group ? 0o2770 : 0o700)));
  return r;
}

export function placeOf(key: LockKey): Place {
  const dir = dirname(key.id);
  const groupShared = isSharedGroupDir(dir);
  const named = key.name !== undefined;
  const base = named ? dir : ensurePrivateDir(runtimeDir());
  return {
    path: key.id,
    groupShared,
    registry: registryOf(join(base, named ? '.holders' : 'holders'), named && groupShared),
    waiters: registryOf(join(base, named ? '.waiters' : 'waiters'), named && groupShared),
  };
}

// A hidden file beside the lock file (like its turnstile): `.<file>.<what>`.
export function besideLock(lockPath: string, what: string): string {
  return turnstilePathFor(lockPath).replace(/\.turnstile$/, `.${what}`);
}
