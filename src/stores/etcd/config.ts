// What an etcd store object is given: its URL's settings with the caller's
// overrides, and the TLS files those name, read once when the store is made.
// A file that cannot be read is the store's error (StoreUnavailable): the
// store cannot reach its cluster without it, and the message names the file
// and what to do about it.
import { readFileSync } from 'node:fs';
import { ErrorCode, HostlockError } from '../../core/errors';
import { parseEtcdUrl, type EtcdConfig } from './url';

export interface EtcdStoreOptions {
  // Overrides of the URL's options.
  ttlSeconds?: number;
  prefix?: string;
}

export function etcdConfig(url: string, opts: EtcdStoreOptions = {}): EtcdConfig {
  const cfg = parseEtcdUrl(url);
  if (opts.ttlSeconds !== undefined) cfg.ttlSeconds = Math.max(2, Math.round(opts.ttlSeconds));
  if (opts.prefix !== undefined) cfg.prefix = opts.prefix;
  return cfg;
}

export interface TlsFiles {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

const FILES = [
  { option: 'cacert', what: 'CA', field: 'ca' },
  { option: 'cert', what: 'certificate', field: 'cert' },
  { option: 'key', what: 'key', field: 'key' },
] as const;

// The PEM files of `cacert=`, `cert=` and `key=`; `describe` names the backend.
export function tlsFiles(cfg: Pick<EtcdConfig, 'cacert' | 'cert' | 'key'>, describe: string): TlsFiles {
  const out: TlsFiles = {};
  for (const { option, what, field } of FILES) {
    const path = cfg[option];
    if (!path) continue;
    try {
      out[field] = readFileSync(path);
    } catch (e) {
      throw unreadable(describe, option, what, path, e as NodeJS.ErrnoException);
    }
  }
  return out;
}

function unreadable(
  describe: string,
  option: string,
  what: string,
  path: string,
  e: NodeJS.ErrnoException,
): HostlockError {
  const why =
    e.code === 'ENOENT'
      ? 'no such file'
      : e.code === 'EACCES' || e.code === 'EPERM'
        ? 'permission denied'
        : e.code === 'EISDIR'
          ? 'it is a directory'
          : e.message;
  return new HostlockError(
    ErrorCode.StoreUnavailable,
    `etcd backend ${describe}: cannot read the ${what} file ${path}: ${why}; give ${option}= a PEM file this user can read`,
    { path, errno: e.code ?? 'EUNKNOWN' },
  );
}
