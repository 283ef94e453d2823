// Errors that cross the protocol: each carries a JSON-RPC code and a message
// that tells the user what to do (docs/PROTOCOL.md lists every code; a test
// compares that table with ErrorCode).

export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  Internal: -32603,
  LockDirUnusable: -32001,
  PathRefused: -32002,
  LockLost: -32003,
  RunHoldConflict: -32004,
  IoError: -32005,
  Deadlock: -32006,
  StoreUnavailable: -32007,
  SlotsMismatch: -32008,
  ProtocolMismatch: -32009,
} as const;

export interface ErrorData {
  path?: string;
  errno?: string;
  [key: string]: unknown;
}

export class HostlockError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data: ErrorData = {},
  ) {
    super(message);
    this.name = 'HostlockError';
  }
}
sharedClass(HostlockError, 'HostlockError');

// A process can run several of hostlock's bundles at once (a command's and a
// server store's, scripts/build.mjs), each with its own copy of a class that
// they all use: `instanceof` on such a class asks for a brand that every copy
// puts on its prototype, so an error made by one copy is one to all of them.
// A subclass (`instanceof EtcdError`) keeps the ordinary prototype test.
export function sharedClass(cls: abstract new (...args: never[]) => object, name: string): void {
  const brand = Symbol.for(`hostlock.${name}`);
  Object.defineProperty(cls.prototype, brand, { value: true });
  Object.defineProperty(cls, Symbol.hasInstance, {
    value(this: unknown, v: unknown): boolean {
      if (this !== cls) return Function.prototype[Symbol.hasInstance].call(this, v);
      return typeof v === 'object' && v !== null && brand in v;
    },
  });
}

// The store could not be reached or refused us: nothing was learnt about the lock.
export function isStoreUnavailable(err: unknown): err is HostlockError {
  return err instanceof HostlockError && err.code === ErrorCode.StoreUnavailable;
}

export function invalidParams(message: string, data: ErrorData = {}): HostlockError {
  return new HostlockError(ErrorCode.InvalidParams, message, data);
}

// Turns a failed system call on `path` into an error the user can act on.
export function fromErrno(err: unknown, path: string, what: string): HostlockError {
  if (err instanceof HostlockError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? 'EUNKNOWN';
  switch (code) {
    case 'ELOOP':
    case 'EMLINK':
      return new HostlockError(
        ErrorCode.PathRefused,
        `refusing to ${what} ${path}: it is a symbolic link; remove it or point hostlock at a regular file`,
        { path, errno: code },
      );
    case 'EISDIR':
      return new HostlockError(
        ErrorCode.PathRefused,
        `refusing to ${what} ${path}: it is a directory, not a lock file`,
        { path, errno: code },
      );
    case 'ENOENT':
      return new HostlockError(
        ErrorCode.LockDirUnusable,
        `cannot ${what} ${path}: its directory does not exist; create it (mkdir -m 0700) or choose another lock directory`,
        { path, errno: code },
      );
    case 'ENOTDIR':
      return new HostlockError(
        ErrorCode.LockDirUnusable,
        `cannot ${what} ${path}: a part of the path is not a directory`,
        { path, errno: code },
      );
    case 'EACCES':
    case 'EPERM':
      return new HostlockError(
        ErrorCode.LockDirUnusable,
        `cannot ${what} ${path}: permission denied; use a lock directory you can write to`,
        { path, errno: code },
      );
    case 'EROFS':
      return new HostlockError(
        ErrorCode.LockDirUnusable,
        `cannot ${what} ${path}: the file system is read-only; use a writable lock directory`,
        { path, errno: code },
      );
    case 'ENOSPC':
    case 'EDQUOT':
      return new HostlockError(
        ErrorCode.LockDirUnusable,
        `cannot ${what} ${path}: no space left on the device; free some space or use another lock directory`,
        { path, errno: code },
      );
    case 'ENAMETOOLONG':
      return new HostlockError(ErrorCode.PathRefused, `cannot ${what} ${path}: the path is too long`, {
        path,
        errno: code,
      });
    default:
      return new HostlockError(ErrorCode.IoError, `cannot ${what} ${path}: ${e?.message ?? String(err)}`, {
        path,
        errno: code,
      });
  }
}
