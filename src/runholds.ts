// Holds that belong to a whole playbook run: the hosts of the run share one
// kernel lock per name, counted by member (inventory host), so a run never
// deadlocks on itself and the lock ends when its last member releases it.
import { ErrorCode, HostlockError } from './errors';
import type { Owner } from './holders';
import type { Mode } from './lockfile';
import { secondsSince as since } from './time';
import type { AcquireOutcome, AcquireRequest, Cancellable, Hold, LockManager, Target } from './manager';

export interface RunHold {
  target: Target;
  mode: Mode;
  hold: Hold;
  members: Set<string>;
}

export interface RunAcquire {
  outcome: Promise<AcquireOutcome & { changed: boolean }>;
  cancel(): void;
}

export class RunHolds {
  readonly held = new Map<string, RunHold>();
  private readonly pending = new Map<string, { mode: Mode; outcome: Promise<AcquireOutcome> }>();

  constructor(
    private readonly manager: LockManager,
    private readonly onChange: () => void = () => {},
  ) {}

  acquire(req: AcquireRequest, member: string): RunAcquire {
    const key = req.target.path;
    let current: Cancellable | undefined;
    let cancelled = false;
    let deadline =
      req.timeout === undefined || req.timeout === null ? Infinity : performance.now() + req.timeout * 1000;
    const started = performance.now();

    const run = async (): Promise<AcquireOutcome & { changed: boolean }> => {
      for (;;) {
        const have = this.held.get(key);
        if (have) return this.join(have, req.mode, member, started);
        const other = this.pending.get(key);
        if (other) {
          // Another member of this run is already waiting for this lock: wait with it.
          if (other.mode !== req.mode) throw conflict(key, other.mode);
          const left = deadline - performance.now();
          if (!req.wait || left <= 0)
            return {
              acquired: false,
              waited: 0,
              reason: req.wait ? 'timeout' : 'busy',
              holders: this.manager.holders(req.target),
              changed: false,
            };
          let timer: NodeJS.Timeout | undefined;
          const gaveUp = new Promise<'timeout'>((r) => {
            if (left !== Infinity) timer = setTimeout(() => r('timeout'), left);
          });
          const res = await Promise.race([other.outcome.catch(() => null), gaveUp]);
          clearTimeout(timer);
          if (cancelled)
            return { acquired: false, waited: since(started), reason: 'cancelled', holders: [], changed: false };
          if (res === 'timeout')
            return {
              acquired: false,
              waited: since(started),
              reason: 'timeout',
              holders: this.manager.holders(req.target),
              changed: false,
            };
          continue; // joined hold is now in `held`, or the other gave up: look again
        }
        const timeout = deadline === Infinity ? req.timeout : Math.max(0, (deadline - performance.now()) / 1000);
        const attempt = this.manager.acquire({ ...req, timeout });
        current = attempt;
        const outcome = attempt.outcome;
        this.pending.set(key, { mode: req.mode, outcome });
        let res: AcquireOutcome;
        try {
          res = await outcome;
        } finally {
          if (this.pending.get(key)?.outcome === outcome) this.pending.delete(key);
        }
        if (!res.acquired || !res.hold) return { ...res, waited: since(started), changed: false };
        this.held.set(key, { target: req.target, mode: req.mode, hold: res.hold, members: new Set([member]) });
        this.onChange();
        return { ...res, waited: since(started), changed: true };
      }
    };
    return {
      outcome: run(),
      cancel: () => {
        cancelled = true;
        deadline = 0;
        current?.cancel();
      },
    };
  }

  private join(have: RunHold, mode: Mode, member: string, started: number): AcquireOutcome & { changed: boolean } {
    if (have.mode !== mode) throw conflict(have.target.path, have.mode);
    const isNew = !have.members.has(member);
    have.members.add(member);
    if (isNew) this.onChange();
    return { acquired: true, hold: have.hold, waited: since(started), holders: [], changed: false };
  }

  // Drops one member's share (or, with no member, the whole hold). True if something was released.
  release(path: string, member?: string): boolean {
    const have = this.held.get(path);
    if (!have) return false;
    let released: boolean;
    if (member === undefined) {
      released = true;
      have.members.clear();
    } else {
      released = have.members.delete(member);
    }
    if (have.members.size === 0) {
      this.held.delete(path);
      this.manager.release(have.hold);
    }
    if (released) this.onChange();
    return released;
  }

  snapshot(): Array<{ name?: string; path: string; mode: Mode; members: string[]; since: string; owner: Owner }> {
    return [...this.held.values()].map((h) => ({
      name: h.target.name,
      path: h.target.path,
      mode: h.mode,
      members: [...h.members],
      since: h.hold.since.toISOString(),
      owner: h.hold.owner,
    }));
  }

  releaseAll(): void {
    for (const path of [...this.held.keys()]) this.release(path);
  }
}

function conflict(path: string, mode: Mode): HostlockError {
  return new HostlockError(
    ErrorCode.RunHoldConflict,
    `this run already holds ${path} in ${mode} mode; release it (state: released) before asking for another mode`,
    { path },
  );
}
