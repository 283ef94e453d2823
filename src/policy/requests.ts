// What a caller of the lock policy asks for and hears back: an acquisition's
// request, its outcome, its waiting notices, and the hold it gets.
import type { DeadlockLink, Holder, Owner } from '../store/types';
import type { Mode } from '../core/mode';
import type { StoreHold } from '../store/contract';
import type { Target } from './targets';

export interface Hold {
  target: Target;
  mode: Mode;
  held: StoreHold;
  since: Date;
  owner: Owner;
  prefix: string;
  slots?: number;
}

// The hold a request gets from its store.
export function holdFor(req: AcquireRequest, held: StoreHold): Hold {
  return {
    target: req.target,
    mode: req.mode,
    held,
    since: held.since,
    owner: req.owner ?? {},
    prefix: req.prefix ?? '',
    slots: req.slots,
  };
}

export interface WaitingInfo {
  waited: number;
  holders: Holder[];
  // 1 = next in line; absent when the store shows no queue.
  position?: number;
  queued?: number; // waiters in the queue, this one included
}

export interface AcquireRequest {
  target: Target;
  mode: Mode;
  timeout?: number | null; // seconds; null/undefined: forever; only when wait is true
  wait: boolean;
  owner?: Owner;
  prefix?: string;
  // A counting semaphore: at most this many holders (mode must be exclusive).
  slots?: number;
  notifyEvery?: number; // seconds
  onWaiting?: (info: WaitingInfo) => void;
  // Called once when the request is found to wait (someone else holds the
  // lock), with who holds it; never for a request granted at its first try.
  onBlocked?: (holders: Holder[]) => void;
  // Called once if the hold is lost under its holder after the grant.
  onLost?: (hold: Hold, reason: string) => void;
  // Called synchronously when the outcome is known, before the promise settles,
  // so a caller's bookkeeping is never behind the lock's real state.
  onSettled?: (outcome?: AcquireOutcome, err?: unknown) => void;
}

export interface AcquireOutcome {
  acquired: boolean;
  hold?: Hold;
  waited: number;
  reason?: 'timeout' | 'busy' | 'cancelled' | 'deadlock';
  holders: Holder[];
  // reason 'deadlock': the cycle this wait would have closed, and its description.
  cycle?: DeadlockLink[];
  message?: string;
}

export interface Cancellable {
  // `timeout`: the waiter's own time ran out, and the history says so.
  cancel(reason?: 'timeout' | 'cancelled'): void;
}
