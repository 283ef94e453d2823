// Which server store a backend URL names, for every part that reads one (the
// command line's checks, the store registry, `hostlock setup`).
const POSTGRES = /^postgres(ql)?:\/\//i;
const ETCD = /^etcd(\+https?)?:\/\//i;

export type ServerStore = 'postgresql' | 'etcd';

// The store a URL names, or undefined for any other string.
export function serverStoreOf(url: string): ServerStore | undefined {
  if (POSTGRES.test(url)) return 'postgresql';
  if (ETCD.test(url)) return 'etcd';
  return undefined;
}
