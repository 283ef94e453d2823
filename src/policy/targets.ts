// Target routing: which store a request's lock lives in, and the store's key
// for it. A name goes to the local store (in `dir`, or the default lock
// directory) or to the server store a backend URL names; a path is always a
// local lock file.
import { invalidParams } from '../core/errors';
import type { LockKey } from '../store/types';
import type { LockStore } from '../store/contract';
import { isLocal, localStore, storeFor } from '../stores';

export interface Target {
  path: string; // the store's id of the lock: a file path for the local store
  name?: string;
  key: LockKey;
  store: LockStore;
}

export function targetForName(name: string, dir?: string, backend?: string): Target {
  if (isLocal(backend)) {
    const key = localStore().keyForName(name, dir);
    return { path: key.id, name, key, store: localStore() };
  }
  if (dir !== undefined) throw invalidParams('"dir" applies to the local store only; omit it with a backend');
  const store = storeFor(backend);
  // Unique within this helper across stores; shown to users as the lock's place.
  return { path: `${store.describe}#${name}`, name, key: { id: name, name }, store };
}

export function targetForPath(path: string): Target {
  const store = localStore();
  return { path, key: store.keyForPath(path), store };
}
