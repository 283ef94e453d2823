// Holds that belong to a whole playbook run: the hosts of the run share one
// kernel lock per name, counted by member (inventory host), so a run never
// deadlocks on itself and the lock ends when its last member releases it.
// A batch (the hosts one task of a `linear` play runs on) is taken as a whole
// (batchplan.ts).
import type { Owner } from '../store/types';
import type { Mode } from '../core/mode';
import { isoTime, nowMs, secondsSince as since } from '../core/time';
import { BatchPlans } from './batchplan';
import type { LockManager } from './manager';
import type { AcquireOutcome, AcquireRequest, Cancellable } from './requests';
import { type Batch, type RunAcquire, type RunHold, type RunOutcome, conflict } from './runhold';

export class RunHolds {
  readonly held = new Map<string, RunHold>();
  private readonly pending = new Map<string, { mode: Mode; outcome: Promise<AcquireOutcome> }>();
  private readonly plans: BatchPlans;

  constructor(
    private readonly manager: LockManager,
    private readonly onChange: () => void = () => {},
  ) {
    this.plans = new BatchPlans({
      held: this.held,
      acquireOne: (req) => this.acquireOne(req, undefined),
      releaseUnused: (have) => this.releaseUnused(have),
      holders: (target) => this.manager.holders(target),
      changed: () => this.onChange(),
    });
  }

  acquire(req: AcquireRequest, member: string, batch?: Batch): RunAcquire {
    if (batch) {
      const plan = this.plans.planFor(batch, req, member);
      if (plan) return this.plans.awaitPlan(plan, req, member);
    }
    return this.acquireOne(req, member);
  }

  // Releases a hold nobody is in or waits for.
  private releaseUnused(have: RunHold): void {
    if (have.members.size > 0 || have.reserved.size > 0) return;
    if (this.held.get(have.target.path) === have) this.held.delete(have.target.path);
    this.manager.release(have.hold);
    this.onChange();
  }

  // One member's own request, or (member undefined) one step of a plan.
  private acquireOne(req: AcquireRequest, member: string | undefined): RunAcquire {
    const key = req.target.path;
    let current: Cancellable | undefined;
    let cancelled = false;
    let deadline = req.timeout === undefined || req.timeout === null ? Infinity : nowMs() + req.timeout * 1000;
    const started = nowMs();

    const run = async (): Promise<RunOutcome> => {
      for (;;) {
        const have = this.held.get(key);
        if (have) return this.join(have, req.mode, member, started);
        const other = this.pending.get(key);
        if (other) {
          // Another member of this run is already waiting for this lock: wait with it.
          if (other.mode !== req.mode) throw conflict(key, other.mode);
          const left = deadline - nowMs();
          if (!req.wait || left <= 0)
            return {
              acquired: false,
              waited: 0,
              reason: req.wait ? 'timeout' : 'busy',
              holders: this.manager.holders(req.target),
              changed: false,
            };
          req.onBlocked?.(this.manager.holders(req.target));
          let timer: NodeJS.Timeout | undefined;
          let stop: () => void = () => {};
          const gaveUp = new Promise<'timeout'>((r) => {
            stop = () => r('timeout');
            if (left !== Infinity) timer = setTimeout(stop, left);
          });
          current = { cancel: stop };
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
        const timeout = deadline === Infinity ? req.timeout : Math.max(0, (deadline - nowMs()) / 1000);
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
        const members = new Set(member === undefined ? [] : [member]);
        this.held.set(key, { target: req.target, mode: req.mode, hold: res.hold, members, reserved: new Set() });
        this.onChange();
        return { ...res, waited: since(started), changed: true };
      }
    };
    return {
      outcome: run(),
      cancel: (reason?: 'timeout' | 'cancelled') => {
        cancelled = true;
        deadline = 0;
        current?.cancel(reason);
      },
    };
  }

  private join(have: RunHold, mode: Mode, member: string | undefined, started: number): RunOutcome {
    if (have.mode !== mode) throw conflict(have.target.path, have.mode);
    const isNew = member !== undefined && !have.members.has(member);
    if (isNew) {
      have.members.add(member);
      this.onChange();
    }
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
      have.reserved.clear();
    } else {
      released = have.members.delete(member);
      // A member that releases without having asked (its lock task was skipped) expects nothing.
      have.reserved.delete(member);
    }
    if (have.members.size === 0 && have.reserved.size === 0) {
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
      since: isoTime(h.hold.since),
      owner: h.hold.owner,
    }));
  }

  // A request of a later batch of the run: the current batch is over.
  batchSeen(id: string): void {
    this.plans.batchSeen(id);
  }

  releaseAll(): void {
    this.plans.endPlan();
    for (const path of [...this.held.keys()]) this.release(path);
  }
}
