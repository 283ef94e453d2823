// Which store a lock lives in: the local flock store unless a backend URL
// names a server store. One store object per backend URL per helper, so that
// a run's agent keeps one session (PostgreSQL) or one lease (etcd) for all of
// its holds and waits.
import { invalidParams } from '../core/errors';
import { controllerName } from '../sys/proc';
import { log } from '../core/log';
import type { LockStore } from '../store/contract';
import { serverStoreOf } from '../store/urls';
import { FlockStore } from './flock/store';

let local: FlockStore | undefined;
const remote = new Map<string, LockStore>();

// The helper's one local store (its record registries are shared by every user).
export function localStore(): FlockStore {
  return (local ??= new FlockStore());
}

export function isLocal(backend: string | undefined): boolean {
  return backend === undefined || backend === '' || backend === 'local';
}

// A server store's scheme, for messages that must not print the URL's password.
function scheme(url: string): string {
  return /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0] ?? 'that';
}

export function storeFor(backend: string | undefined): LockStore {
  if (isLocal(backend)) return localStore();
  const url = backend!;
  const known = remote.get(url);
  if (known) return known;
  const opener = openers.find((o) => o.matches(url));
  if (!opener) {
    throw invalidParams(
      `unknown backend ${scheme(url)}//…: use "local" (the default), a postgresql:// URL or an etcd:// URL`,
    );
  }
  const store = opener.open(url);
  remote.set(url, store);
  return store;
}

// Closes every server store: their sessions and leases end, releasing all.
export async function closeStores(): Promise<void> {
  const all = [...remote.values()];
  remote.clear();
  await Promise.allSettled(all.map(async (s) => s.close()));
}

interface Opener {
  matches(url: string): boolean;
  open(url: string): LockStore;
}

// Server stores are loaded only when a backend names them: a local run's
// agent never pays for their clients. Each is a bundle of its own in dist/
// (scripts/build.mjs), so a command on the local store does not even read
// their code.
const openers: Opener[] = [
  {
    matches: (url) => serverStoreOf(url) === 'postgresql',
    open: (url) =>
      new (postgresModule().PostgresStore)(url, { controller: controllerName(), log: (m) => log.error(m) }),
  },
  {
    matches: (url) => serverStoreOf(url) === 'etcd',
    open: (url) => new (etcdModule().EtcdStore)(url),
  },
];

// The PostgreSQL store's code, for its stores and for `hostlock setup`.
export function postgresModule(): typeof import('./postgres/store') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (see above)
  return require('./postgres/store') as typeof import('./postgres/store');
}

function etcdModule(): typeof import('./etcd/store') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (see above)
  return require('./etcd/store') as typeof import('./etcd/store');
}
