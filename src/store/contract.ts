// The lock-store seam: where locks live, below the policy that decides who
// asks for them when.
//
// Above this interface (LockManager, RunHolds, the protocol, the agent) sit
// the in-helper FIFO queues, timeouts, run-owned holds, waiting notices and
// holder metadata. Below it, a store only knows how to take and drop one lock
// on one key, how to wait for it without ever holding it after giving up, and
// who holds and waits on a key right now. The local store keeps locks as
// flock(2)'d files; the PostgreSQL and etcd stores keep them in a server that
// many controllers share.
//
// What a store author must guarantee:
//  - `acquire` resolves to a StoreHold only when the lock is held; once it has
//    resolved `null` or rejected (also after `signal` aborted the wait), the
//    store holds nothing for that request, now or later (no ghost holders).
//  - A hold that the store loses under its holder (file deleted, session or
//    lease ended, key deleted by an admin) calls `onLost` once, at once, with
//    a reason the user can read; the hold stays lost (the policy turns it into
//    "lock lost" on the run's next task).
//  - `token` on every grant is an integer that strictly increases per key
//    across every holder of that key, restarts included.
//  - Holder and waiter records name their owner (pid, user, controller, run,
//    playbook, play, task, host, since) and are never reported for a dead
//    owner.
//  - Passwords never leave the store: `describe` and every error message use
//    a masked URL.
import type { Mode } from '../core/mode';
import type { HistoryEvent, HistoryRecord, Holder, LockKey, Requester } from './types';

// A store that can answer at once (the local store: one non-blocking flock)
// returns the value itself, so that the helper can reply in request order and
// hand a released lock over inside the release; a server store returns a promise.
export type MaybePromise<T> = T | Promise<T>;

export interface StoreAcquire {
  key: LockKey;
  mode: Mode;
  requester: Requester;
  // false: try once, resolve null when busy. true: wait until held or aborted.
  wait: boolean;
  // Aborting ends the wait: the promise then rejects with an AbortError (or
  // resolves null) and nothing is held. Aborted before the server was ever
  // reached (still connecting), it rejects with the store's error
  // (StoreUnavailable) saying so: nobody was seen holding the key.
  signal?: AbortSignal;
  // Called once if the hold is later lost under its holder.
  onLost?: (reason: string) => void;
  // A store that queues waits itself (no `enqueue`) calls this once the wait
  // is in its queue, with the id `status` gives that waiter: the policy can
  // then look for a deadlock through `waitGraph`.
  onQueued?: (id: string) => void;
  // Optional (a counting semaphore): at most `slots` holders of the key at
  // once, each in a slot of its own (mode is then 'exclusive'). Every holder
  // and waiter must ask for the same number, and a key held without slots
  // cannot be taken with them or the reverse: the store throws an error with
  // code SlotsMismatch naming both values.
  slots?: number;
}

export interface StoreHold {
  readonly key: LockKey;
  readonly mode: Mode;
  readonly token: number;
  readonly since: Date;
  // With `slots`: which slot (1..slots) this hold took.
  readonly slot?: number;
  // True once the store has noticed the hold is gone (onLost was called).
  readonly lost: boolean;
  // A descriptor whose inheritance keeps the lock held (local store only):
  // `hostlock run` passes it to its command, as flock(1) does.
  readonly fd?: number;
  release(): MaybePromise<void>;
}

export interface Waiter extends Requester {
  mode: Mode;
  since: string; // waiting since, ISO 8601
  // The store's id of this wait (WaitTicket.id), unique within the store.
  id?: string;
  helper_pid?: number;
  slots?: number;
}

// A wait made visible to others: from `enqueue` until `remove`, the store
// reports it among the key's waiters (never once its owner has died).
export interface WaitTicket {
  readonly id: string;
  remove(): MaybePromise<void>;
}

export interface KeyStatus {
  key: LockKey;
  held: boolean;
  mode: Mode | null;
  holders: Holder[]; // in grant order; lost holds flagged `lost: true`
  waiters: Waiter[]; // in queue order
  slots?: number; // the slot count its holders asked for, while held with slots
}

export interface LockStore {
  // "local", "postgresql" or "etcd".
  readonly kind: string;
  // Where the locks live, safe to print (passwords masked).
  readonly describe: string;

  acquire(req: StoreAcquire): MaybePromise<StoreHold | null>;
  status(key: LockKey): MaybePromise<KeyStatus>;
  // Every key the store knows under a prefix (the local store: a directory).
  list(prefix?: string): MaybePromise<KeyStatus[]>;
  // Releases every hold and abandons every wait of this store object, then
  // frees its connections, sessions or leases.
  close(): MaybePromise<void>;

  // ---- optional: coordination features (a store without them still locks) ----

  // Makes a wait visible in `status(key).waiters` (queue order: waiting since,
  // then id). The policy calls it for every waiter it queues, also those that
  // wait behind another waiter of the same helper, and removes it once the
  // wait has ended, whatever the outcome.
  enqueue?(key: LockKey, requester: Requester, mode: Mode, slots?: number): MaybePromise<WaitTicket>;

  // Every key whose holders and waiters may form a wait-for cycle with `key`
  // (the local store: the locks of the key's directory), for deadlock
  // detection; undefined when the store cannot tell (the key is then left out).
  // Holders and waiters must carry `run` to take part.
  waitGraph?(key: LockKey): MaybePromise<KeyStatus[] | undefined>;

  // Appends one event to the key's bounded history. Best effort: it never
  // throws, and a lock is never refused for want of a history line.
  record?(event: HistoryEvent): void;

  // The recorded history of one name or of the whole store, oldest first,
  // `since` in ms since the epoch (`hostlock history|timeline --backend`; the
  // local store's journal is read per directory by history.ts instead).
  history?(query: { name?: string; since?: number }): MaybePromise<HistoryRecord[]>;

  // Ends the hold of `key` whose fencing token is `token`, from any
  // controller (`hostlock break --backend`): the next waiter proceeds and the
  // holder's helper sees the hold lost (onLost: "lock lost"). Resolves once the
  // hold is gone; rejects with an error saying why when there is no such hold
  // or it may not be ended. Records a `break` event naming `by` and `reason`.
  breakHold?(key: LockKey, token: number, by: Requester, reason: string): MaybePromise<Holder>;
}

// `connecting` (a store's shared connection or session, which other requests
// may still use), unless `signal` aborts first: then the error `unreached()`
// makes, saying the server has not answered yet.
export function unlessAborted<T>(
  connecting: Promise<T>,
  signal: AbortSignal | undefined,
  unreached: () => Error,
): Promise<T> {
  if (!signal) return connecting;
  if (signal.aborted) return Promise.reject(unreached());
  return new Promise((resolve, reject) => {
    const ended = () => reject(unreached());
    signal.addEventListener('abort', ended, { once: true });
    connecting.then(resolve, reject).finally(() => signal.removeEventListener('abort', ended));
  });
}
