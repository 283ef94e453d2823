// What the policy writes to a store's history, and who it names: the
// requester of a lock is its owner's metadata, completed with this process.
import { controllerName, currentUser } from '../sys/proc';
import type { HistoryEvent, Owner, Requester } from '../store/types';
import type { Target } from './targets';

export function requesterOf(owner: Owner = {}): Requester {
  return { ...owner, pid: owner.pid ?? process.pid, user: owner.user ?? currentUser(), controller: controllerName() };
}

// Best effort: a history that cannot be written never fails a lock.
export function record(target: Target, e: Omit<HistoryEvent, 'key'>): void {
  try {
    target.store.record?.({ ...e, key: target.key });
  } catch {
    /* history is best effort */
  }
}
