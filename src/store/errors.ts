// The errors every store raises the same way: a wait ended by its abort
// signal, a store used after `close`, and a lock asked for with a slot count
// its other users do not share. Each store's own failures (a server that does
// not answer, a refused login) are HostlockErrors with code StoreUnavailable,
// made where the store knows what to advise.
import { ErrorCode, HostlockError, sharedClass } from '../core/errors';
import type { LockKey, Owner } from './types';

// The wait was aborted (its task was cancelled, its timeout expired or its
// client went away): nothing is held, and the caller already knows why.
export class AbortError extends Error {
  constructor() {
    super('the wait was aborted');
    this.name = 'AbortError';
  }
}
sharedClass(AbortError, 'AbortError');

export function isAbort(err: unknown): err is AbortError {
  return err instanceof AbortError;
}

// The store was closed while this request was in flight or before it came.
export function storeClosed(describe: string, during?: string): HostlockError {
  return new HostlockError(
    ErrorCode.StoreUnavailable,
    `${describe}: the store was closed${during ? ` ${during}` : ''}; the helper is shutting down, retry with a new one`,
  );
}

export interface SlotsUse {
  // How the lock is used now: its slot count (undefined: without slots), and by whom.
  found: number | undefined;
  by?: Owner & { controller?: string };
  // The other user holds it (true) or waits for it (false).
  held?: boolean;
  // Where the other use was seen, when it is not the store ("in this helper").
  where?: string;
}

// A request whose slot count disagrees with the lock's other holders or waiters.
export function slotsMismatch(key: LockKey, asked: number | undefined, use: SlotsUse): HostlockError {
  const say = (n: number | undefined) => (n === undefined ? 'without slots' : `with slots: ${n}`);
  const o = use.by;
  const by = o
    ? [
        o.controller ? `controller ${o.controller}` : '',
        o.pid !== undefined ? `pid ${o.pid}` : '',
        o.run ? `run ${o.run}` : '',
        o.task ? `task ${o.task}` : '',
      ]
        .filter(Boolean)
        .join(', ')
    : '';
  const context = [use.where, by].filter(Boolean).join(', ');
  return new HostlockError(
    ErrorCode.SlotsMismatch,
    `'${key.name ?? key.id}' is ${use.held === false ? 'waited for' : 'in use'} ${say(use.found)}` +
      `${context ? ` (${context})` : ''}, but this request asks ${say(asked)}: every user of a lock must give the same slots`,
    { asked: asked ?? null, found: use.found ?? null },
  );
}
