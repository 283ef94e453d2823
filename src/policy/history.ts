// What the policy writes to a store's history, and who it names: the
// requester of a lock is its owner's metadata, completed with this process.
import { controllerName, currentUser } from '../sys/proc';
import { log } from '../core/log';
import type { HistoryEvent, Owner, Requester } from '../store/types';
import type { Hold } from './requests';
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

// A grant's line, written before its holder hears of it: a holder killed the
// moment it hears still has its line.
export function recordGrant(hold: Hold, waited: number, wait?: string): void {
  record(hold.target, {
    event: 'grant',
    mode: hold.mode,
    who: requesterOf(hold.owner),
    token: hold.held.token,
    wait,
    waited,
    at: hold.held.since,
  });
  log.info('Acquired', { prefix: hold.prefix, path: hold.target.path, mode: hold.mode });
}

// Gives a hold back to its store, with its line; a lost hold's end is its
// `lost` line, written by the store.
export function releaseAndRecord(hold: Hold): void {
  const lost = hold.held.lost;
  const done = hold.held.release();
  if (!lost)
    record(hold.target, { event: 'release', mode: hold.mode, who: requesterOf(hold.owner), token: hold.held.token });
  if (done instanceof Promise) {
    done.catch((err) => log.warn(`releasing ${hold.target.path}: ${(err as Error).message}`));
  }
  log.info('Released', { prefix: hold.prefix, path: hold.target.path });
}
