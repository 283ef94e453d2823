// A wait made visible to others: its waiter record in the store's queue (for
// `status` and deadlock detection) and its line in the history. A run's wait
// is visible at once (deadlock detection needs it); any other wait once it has
// lasted VISIBLE_AFTER_MS, so that the many sub-millisecond handoffs of a busy
// lock cost no record at all.
import type { WaitTicket } from '../store/contract';
import { log } from '../core/log';
import type { DeadlockWatch } from './deadlockwatch';
import { record, requesterOf } from './history';
import type { Notices } from './notices';
import type { Acquisition } from './queue';

const VISIBLE_AFTER_MS = 50;

export class Tickets {
  constructor(
    private readonly notices: Notices,
    private readonly deadlocks: DeadlockWatch,
  ) {}

  // The wait begins.
  enqueue(a: Acquisition): void {
    const { store } = a.req.target;
    if (!store.enqueue) {
      // A store that queues its waiters itself (a server store) still records the wait.
      if (!store.record) return;
      a.visibleTimer = setTimeout(() => {
        if (a.settled) return;
        a.waitRecorded = true;
        record(a.req.target, { event: 'wait', mode: a.req.mode, who: requesterOf(a.req.owner) });
      }, VISIBLE_AFTER_MS);
      return;
    }
    if (a.req.owner?.run) {
      this.write(a);
      this.deadlocks.soon(a);
    } else {
      a.visibleTimer = setTimeout(() => {
        if (!a.settled) this.write(a);
      }, VISIBLE_AFTER_MS);
    }
  }

  // The wait has ended: its record goes.
  drop(a: Acquisition): void {
    clearTimeout(a.visibleTimer);
    const t = a.ticket;
    if (!t) return;
    a.ticket = undefined;
    const remove = (t: WaitTicket) => {
      try {
        const r = t.remove();
        if (r instanceof Promise) r.catch(() => {});
      } catch {
        /* the record goes with its process anyway */
      }
    };
    if (t instanceof Promise) t.then(remove, () => {});
    else remove(t);
  }

  private write(a: Acquisition): void {
    const { store, key } = a.req.target;
    try {
      if (!store.enqueue) return;
      const t = store.enqueue(key, requesterOf(a.req.owner), a.req.mode, a.req.slots);
      a.ticket = t;
      const known = (t: WaitTicket) => {
        a.ticketId = t.id;
        a.waitRecorded = true;
        this.notices.forget(a.req.target.path);
        record(a.req.target, { event: 'wait', mode: a.req.mode, who: requesterOf(a.req.owner), wait: t.id });
      };
      if (t instanceof Promise) t.then(known, () => (a.ticket = undefined));
      else known(t);
    } catch (err) {
      log.debug(`no waiter record: ${(err as Error).message}`);
    }
  }
}
