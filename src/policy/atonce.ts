// A process that takes one lock and then ends (`hostlock run`) takes a free
// lock of the local store by itself, with one non-blocking try, as flock(1)
// takes it. The lock manager's queue, promises, timers and notices are for a
// request that waits; on a free lock they would only delay the command.
import { nowMs, secondsSince } from '../core/time';
import { localStore } from '../stores';
import { recordGrant, requesterOf } from './history';
import { type AcquireRequest, type Hold, holdFor } from './requests';

// Held, with its grant recorded as the manager records one; null when the
// lock is busy or lives in a server store, which answers later: the caller
// then waits through the manager.
export function takeIfFree(req: AcquireRequest): Hold | null {
  if (req.target.store !== localStore()) return null;
  const started = nowMs();
  const granted: { hold?: Hold } = {};
  const held = localStore().tryAcquire({
    key: req.target.key,
    mode: req.mode,
    slots: req.slots,
    requester: requesterOf(req.owner),
    onLost: (reason) => {
      if (granted.hold) req.onLost?.(granted.hold, reason);
    },
  });
  if (!held) return null;
  const hold = (granted.hold = holdFor(req, held));
  recordGrant(hold, secondsSince(started));
  return hold;
}
