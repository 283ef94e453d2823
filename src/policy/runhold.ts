// A run hold: one kernel lock that the members (inventory hosts) of one
// playbook run share, and what a member's request for it gets back.
import { ErrorCode, HostlockError } from '../core/errors';
import type { Mode } from '../core/mode';
import type { AcquireOutcome, Hold } from './requests';
import type { Target } from './targets';

export interface RunHold {
  target: Target;
  mode: Mode;
  hold: Hold;
  // Members that asked for the lock and got it.
  members: Set<string>;
  // Members of the current batch the run took the lock for, that have not asked yet.
  reserved: Set<string>;
}

export interface RunOutcome extends AcquireOutcome {
  changed: boolean;
  // The lock name a batch member waits behind, when that is not its own.
  behind?: string;
}

export interface RunAcquire {
  outcome: Promise<RunOutcome>;
  // `timeout`: the waiter's own time ran out, and the history says so.
  cancel(reason?: 'timeout' | 'cancelled'): void;
}

// The hosts one task of a `linear` play runs on, taken as a whole (batchplan.ts).
export interface Batch {
  // The same for every member of one task's batch, different for the next batch.
  id: string;
  entries: Array<{ member: string; target: Target }>;
}

// A member asks for a mode other than the one its run holds the lock in.
export function conflict(path: string, mode: Mode): HostlockError {
  return new HostlockError(
    ErrorCode.RunHoldConflict,
    `this run already holds ${path} in ${mode} mode; release it (state: released) before asking for another mode`,
    { path },
  );
}
