// The --backend and --dir options of the commands, checked before anything is
// opened: a mistake in them is a usage error (exit 64) that names the right form.
import { serverStoreOf } from '../store/urls';
import { UsageError } from './exit';

const FORMS = 'local (the default), postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB or etcd://HOST:PORT';

// A server store's scheme, for messages that must not print the URL's password.
function schemeOf(url: string): string | undefined {
  return /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0];
}

// `given`: the option's own value; without it the backend comes from $HOSTLOCK_BACKEND.
export function checkBackendArgs(given: string | undefined, dir: string | undefined): void {
  const backend = given ?? process.env.HOSTLOCK_BACKEND;
  const label = given !== undefined ? '--backend' : 'HOSTLOCK_BACKEND';
  if (backend === undefined || backend === '' || backend === 'local') return;
  if (dir !== undefined) throw new UsageError(`--dir applies to the local store only; omit it with ${label}`);
  if (serverStoreOf(backend)) return;
  const scheme = schemeOf(backend);
  if (scheme && serverStoreOf(`${scheme}//`)) {
    throw new UsageError(
      `${label} ${scheme}…: the URL needs two slashes after the scheme (${scheme}//…); give ${FORMS}`,
    );
  }
  throw new UsageError(`${label} ${scheme ? `${scheme}…` : 'value'}: unknown backend; give ${FORMS}`);
}
