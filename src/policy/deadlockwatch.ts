// When a run's wait looks for a deadlock (deadlock.ts finds the cycle).
// Checks run right after the requests of this turn of the event loop have
// written their waiter records, so they share one reading of the records.
// Our waiter record is written before we look, so of two runs closing a cycle
// at the same moment at least one sees the other's wait. A cycle that a newer
// wait closed is left to that wait's run; should it still stand a moment
// later (that run never looked), this wait fails after all.
import type { DeadlockLink } from '../store/types';
import type { KeyStatus } from '../store/contract';
import { log } from '../core/log';
import { describeCycle, findCycle } from './deadlock';
import type { Acquisition } from './queue';

// How long a cycle closed by another run's newer wait may stand before this
// wait fails too (that run may have looked just before our record appeared).
const DEADLOCK_RECHECK_MS = 1000;

export class DeadlockWatch {
  private due: Acquisition[] = [];

  // `onCycle`: the wait closes a cycle of runs and must fail at once.
  constructor(private readonly onCycle: (a: Acquisition, cycle: DeadlockLink[], message: string) => void) {}

  // Looks at the end of this turn of the event loop.
  soon(a: Acquisition): void {
    this.due.push(a);
    if (this.due.length > 1) return;
    setImmediate(() => {
      const due = this.due;
      this.due = [];
      for (const c of due) if (!c.settled) this.check(c);
    });
  }

  private check(a: Acquisition, last = false): void {
    const run = a.req.owner?.run;
    const { store, key } = a.req.target;
    if (!run || !store.waitGraph) return;
    const me = {
      run,
      keyId: key.id,
      mode: a.req.mode,
      task: a.req.owner?.task,
      host: a.req.owner?.host,
      id: a.ticketId,
    };
    const judge = (statuses: KeyStatus[] | undefined): void => {
      if (!statuses || a.settled || a.givingUp) return;
      const found = findCycle(statuses, me);
      if (!found) return;
      if (!found.closing && !last) {
        setTimeout(() => this.check(a, true), DEADLOCK_RECHECK_MS).unref();
        return;
      }
      const message = describeCycle(found.links);
      log.warn(message, { prefix: a.req.prefix, path: key.id });
      this.onCycle(a, found.links, message);
    };
    try {
      const g = store.waitGraph(key);
      if (g instanceof Promise) g.then(judge, () => {});
      else judge(g);
    } catch (err) {
      log.debug(`no deadlock check: ${(err as Error).message}`);
    }
  }
}
