// Waiting notices: who holds the lock a wait is behind, and where the wait
// stands in the queue. Hundreds of waiters on one lock must not each re-read
// the holders, so their notices share a reading for a moment. A server
// store's notice waits for a fresh reading (one per lock at a time), so that
// it names the holder the store has now, as `status` does.
import type { Holder } from '../store/types';
import type { KeyStatus, Waiter } from '../store/contract';
import { nowMs, secondsSince } from '../core/time';
import type { Acquisition } from './queue';
import type { WaitingInfo } from './requests';
import type { Target } from './targets';

interface Reading {
  at: number;
  holders: Holder[];
  waiters: Waiter[];
}

// A reading serves the notices of this long.
const FRESH_MS = 250;

// How often, and how far apart, a notice looks again at a lock held by a
// process that has no holder record yet.
const UNRECORDED_LOOKS = 3;
const UNRECORDED_WAIT_MS = 50;

export class Notices {
  private readonly readings = new Map<string, Reading>();
  // A server store's status reading under way, by lock path: shared by its waiters.
  private readonly reading = new Map<string, Promise<Reading | null>>();

  // The holders changed: no notice may name the previous ones.
  forget(path: string): void {
    this.readings.delete(path);
  }

  // The holders last read for a server store's lock (its status is a promise).
  holders(path: string): Holder[] {
    return this.readings.get(path)?.holders ?? [];
  }

  // Sends `a` its notice, unless it has settled or nobody is in its way.
  notify(a: Acquisition): void {
    if (!a.blocked) return; // not waiting behind anyone (yet): nothing to say
    this.read(a.req.target, (state) => {
      // Settled meanwhile, or the reading shows nobody in the way: the grant is on its way.
      if (a.settled || !state || state.holders.length === 0) return;
      const info: WaitingInfo = { waited: secondsSince(a.started), holders: state.holders };
      const i = a.ticketId === undefined ? -1 : state.waiters.findIndex((q) => q.id === a.ticketId);
      if (i >= 0) {
        info.position = i + 1;
        info.queued = state.waiters.length;
      }
      a.req.onWaiting?.(info);
    });
  }

  private read(target: Target, then: (state: Reading | null) => void, tries = 0): void {
    const hit = this.readings.get(target.path);
    if (hit && nowMs() - hit.at < FRESH_MS) return then(hit);
    const keep = (holders: Holder[], waiters: Waiter[]) => {
      if (this.readings.size > 4096) this.readings.clear();
      const state = { at: nowMs(), holders, waiters };
      this.readings.set(target.path, state);
      return state;
    };
    let reading = this.reading.get(target.path);
    if (!reading) {
      let s: KeyStatus | Promise<KeyStatus>;
      try {
        s = target.store.status(target.key);
      } catch {
        return then(null); // no reading: no notice naming nobody
      }
      if (!(s instanceof Promise)) {
        // A local holder writes its record just after its flock: a lock held by nobody
        // but a process without a record may be one a moment before its record. Look
        // again shortly before naming it a process outside hostlock.
        const unrecorded = s.holders.length > 0 && s.holders.every((h) => h.foreign);
        if (unrecorded && tries < UNRECORDED_LOOKS) {
          setTimeout(() => this.read(target, then, tries + 1), UNRECORDED_WAIT_MS).unref();
          return;
        }
        return then(keep(s.holders, s.waiters));
      }
      reading = s.then(
        (st) => keep(st.holders, st.waiters),
        () => null,
      );
      const mine = reading;
      this.reading.set(target.path, mine);
      void mine.then(() => {
        if (this.reading.get(target.path) === mine) this.reading.delete(target.path);
      });
    }
    void reading.then(then);
  }
}
