// A lock's place in this helper: the holds this helper has of it and the
// acquisitions queued for it, first come first served.
import type { StoreHold, WaitTicket } from '../store/contract';
import type { AcquireOutcome, AcquireRequest, Hold } from './requests';

// One acquire request from its start until its outcome is known.
export interface Acquisition {
  req: AcquireRequest;
  entry: LockEntry;
  started: number;
  hold?: Hold; // once granted, for the store's lost-hold callback
  // The store's wait, while this acquisition is at the head of its queue.
  storeWait?: StoreWait;
  timer?: NodeJS.Timeout;
  ticker?: NodeJS.Timeout;
  resolve: (o: AcquireOutcome) => void;
  fail: (err: unknown) => void;
  settled: boolean;
  givingUp?: boolean; // cancelled; settles once the store's wait has ended
  // The wait as others see it in the store's queue; removed once settled.
  ticket?: WaitTicket | Promise<WaitTicket>;
  ticketId?: string;
  // The wait is in the history: its end (timeout, cancel) is recorded too.
  waitRecorded?: boolean;
  visibleTimer?: NodeJS.Timeout;
  // Found to wait behind another holder: only then do waiting notices go out.
  blocked?: boolean;
}

export interface StoreWait {
  abort: AbortController;
  done: Promise<StoreHold | null>;
}

export interface LockEntry {
  id: string;
  holds: Set<Hold>;
  queue: Acquisition[];
}

// Takes an acquisition out of its lock's queue (wherever it stands) and
// returns the store's wait it had, now no longer its own.
export function leaveQueue(a: Acquisition): StoreWait | undefined {
  const i = a.entry.queue.indexOf(a);
  if (i >= 0) a.entry.queue.splice(i, 1);
  const wait = a.storeWait;
  a.storeWait = undefined;
  return wait;
}
