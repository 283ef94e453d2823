// The batch plan of a run: the hosts one task of a `linear` play runs on are
// taken as a whole. The first member to ask hands over every member's lock
// name, and the run takes those names one after the other in path order on
// behalf of all of them, whether or not their workers have started. Every run
// takes any two names in the same order, so two runs can never each hold a
// part of what the other waits for; a member is answered as soon as its own
// name is held.
import { isStoreUnavailable } from '../core/errors';
import type { Holder, Owner } from '../store/types';
import type { Mode } from '../core/mode';
import { nowMs, secondsSince as since } from '../core/time';
import type { AcquireRequest, Cancellable, WaitingInfo } from './requests';
import { type Batch, type RunAcquire, type RunHold, type RunOutcome, conflict } from './runhold';
import type { Target } from './targets';

// What a plan uses of its run's holds (runholds.ts).
export interface PlanRun {
  readonly held: Map<string, RunHold>;
  // One step of the plan: the run's own request for one lock.
  acquireOne(req: AcquireRequest, member: undefined): RunAcquire;
  // Releases a hold nobody is in or waits for.
  releaseUnused(have: RunHold): void;
  holders(target: Target): Holder[];
  changed(): void;
}

interface PlanEntry {
  target: Target;
  // Members that still expect this lock: it is taken only while someone does.
  reserved: Set<string>;
  state: 'queued' | 'taking' | 'held' | 'dropped' | 'failed' | 'refused';
  // Why the lock was refused (a deadlock): told to every member that waits for it.
  refusal?: RunOutcome;
  // The plan took a new kernel lock for it: the first member to claim it reports changed.
  fresh?: boolean;
  error?: unknown;
}

interface Plan {
  id: string;
  mode: Mode;
  entries: PlanEntry[];
  byMember: Map<string, PlanEntry>;
  // The entry whose lock another holder keeps, and who that is.
  blocked?: { entry: PlanEntry; holders: Holder[] };
  current?: Cancellable;
  // Woken on every change of an entry; a member's wait looks again.
  wake: Set<() => void>;
  // Members whose request waits in this plan now.
  waiting: number;
  listeners: Set<(info: WaitingInfo) => void>;
  ended: boolean;
}

export class BatchPlans {
  private plan: Plan | undefined;

  constructor(private readonly run: PlanRun) {}

  // The plan that covers `member` in `batch`, started if this is the batch's first request.
  planFor(batch: Batch, req: AcquireRequest, member: string): Plan | undefined {
    let plan = this.plan;
    if (plan && plan.id === batch.id && !plan.byMember.get(member)?.reserved.has(member)) {
      // The member already had its turn in this plan: the task runs again (a retry or
      // a repeated include). Start afresh once nobody waits in the old one.
      if (plan.waiting > 0) return undefined;
      this.endPlan();
      plan = undefined;
    }
    if (plan && plan.id !== batch.id) {
      // Under `linear` a new batch starts only when every host finished the previous
      // one: the locks taken for members that never asked are nobody's now.
      this.endPlan();
      plan = undefined;
    }
    if (!plan) {
      if (!batch.entries.some((e) => e.member === member)) return undefined;
      plan = this.startPlan(batch, req);
    }
    // A member whose own request names another lock than the plan has for it is not covered.
    return plan.byMember.get(member)?.target.path === req.target.path ? plan : undefined;
  }

  private startPlan(batch: Batch, req: AcquireRequest): Plan {
    const byPath = new Map<string, PlanEntry>();
    const byMember = new Map<string, PlanEntry>();
    for (const { member, target } of batch.entries) {
      if (byMember.has(member)) continue;
      let e = byPath.get(target.path);
      if (!e) byPath.set(target.path, (e = { target, reserved: new Set(), state: 'queued' }));
      e.reserved.add(member);
      byMember.set(member, e);
    }
    // One global order for every run: the lock path, compared as bytes.
    const entries = [...byPath.values()].sort((a, b) =>
      Buffer.compare(Buffer.from(a.target.path), Buffer.from(b.target.path)),
    );
    const plan: Plan = {
      id: batch.id,
      mode: req.mode,
      entries,
      byMember,
      wake: new Set(),
      waiting: 0,
      listeners: new Set(),
      ended: false,
    };
    this.plan = plan;
    void this.runPlan(plan, req);
    return plan;
  }

  private async runPlan(plan: Plan, req: AcquireRequest): Promise<void> {
    for (const entry of plan.entries) {
      if (plan.ended) return;
      if (entry.reserved.size === 0) {
        entry.state = 'dropped';
        continue;
      }
      entry.state = 'taking';
      const owner: Owner = { ...req.owner, host: [...entry.reserved][0] };
      let settled = this.run.held.has(entry.target.path);
      // Members waiting behind this lock say who holds it, once the store has
      // said that someone does: a server store's first answer comes later.
      let early: Holder[] | undefined;
      let taking = false;
      const block = (holders: Holder[]) => {
        if (settled || plan.ended) return;
        plan.blocked = { entry, holders };
        this.wakePlan(plan);
      };
      const attempt = this.run.acquireOne(
        {
          ...req,
          target: entry.target,
          mode: plan.mode,
          wait: true,
          timeout: undefined,
          owner,
          onSettled: () => (settled = true),
          onBlocked: (holders) => (taking ? block(holders) : (early = holders)),
          onWaiting: (info) => {
            if (plan.blocked?.entry === entry) plan.blocked.holders = info.holders;
            for (const l of plan.listeners) l(info);
          },
        },
        undefined,
      );
      plan.current = attempt;
      taking = true;
      if (early) block(early);
      let res: RunOutcome | undefined;
      try {
        res = await attempt.outcome;
      } catch (err) {
        entry.state = 'failed';
        entry.error = err;
      }
      settled = true;
      plan.current = undefined;
      plan.blocked = undefined;
      if (res?.acquired) {
        const have = this.run.held.get(entry.target.path)!;
        if (plan.ended || entry.reserved.size === 0) {
          entry.state = 'dropped';
          this.run.releaseUnused(have);
        } else {
          for (const m of entry.reserved) have.reserved.add(m);
          entry.reserved = have.reserved;
          entry.fresh = res.changed;
          entry.state = 'held';
        }
      } else if (res?.reason === 'deadlock') {
        entry.state = 'refused';
        entry.refusal = res;
      } else if (res) {
        entry.state = 'dropped'; // cancelled: every member gave up on it, or the plan ended
      }
      this.wakePlan(plan);
    }
    this.finishPlan(plan);
  }

  awaitPlan(plan: Plan, req: AcquireRequest, member: string): RunAcquire {
    const entry = plan.byMember.get(member)!;
    const started = nowMs();
    let deadline =
      !req.wait || req.timeout === undefined || req.timeout === null ? Infinity : started + req.timeout * 1000;
    let cancelled = false;
    let kick: () => void = () => {};
    const run = async (): Promise<RunOutcome> => {
      if (req.onWaiting) plan.listeners.add(req.onWaiting);
      plan.waiting++;
      try {
        for (;;) {
          const have = entry.state === 'held' ? this.run.held.get(entry.target.path) : undefined;
          if (have && (have.reserved.has(member) || have.members.has(member))) {
            if (have.mode !== req.mode) throw conflict(have.target.path, have.mode);
            have.reserved.delete(member);
            const changed = !have.members.has(member) && entry.fresh === true;
            entry.fresh = false;
            have.members.add(member);
            this.run.changed();
            this.finishPlan(plan);
            return { acquired: true, hold: have.hold, waited: since(started), holders: [], changed };
          }
          if (entry.state === 'failed') {
            this.giveUp(plan, entry, member);
            throw entry.error;
          }
          if (entry.state === 'refused') {
            this.giveUp(plan, entry, member);
            return { ...entry.refusal!, waited: since(started), changed: false };
          }
          const blocked = plan.blocked && plan.entries.indexOf(plan.blocked.entry) <= plan.entries.indexOf(entry);
          const gone = entry.state === 'dropped' || entry.state === 'held' || plan.ended;
          const now = nowMs();
          if (gone || cancelled || now >= deadline || (!req.wait && blocked)) {
            const holders = blocked ? plan.blocked!.holders : this.run.holders(entry.target);
            const behind = blocked && plan.blocked!.entry !== entry ? plan.blocked!.entry.target.name : undefined;
            // A failed try keeps its place: the block that follows waits in the same plan.
            if (req.wait || gone) this.giveUp(plan, entry, member, cancelled || gone ? 'cancelled' : 'timeout');
            if (entry.state === 'taking' && entry.reserved.size === 0 && !cancelled) {
              // This member's timeout ended the take: a store that never answered it says why.
              while (entry.state === 'taking') await new Promise<void>((resolve) => plan.wake.add(resolve));
              if (isStoreUnavailable(entry.error)) throw entry.error;
            }
            const reason = cancelled || gone ? 'cancelled' : req.wait ? 'timeout' : 'busy';
            return { acquired: false, waited: since(started), reason, holders, changed: false, behind };
          }
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            kick = resolve;
            plan.wake.add(resolve);
            if (deadline !== Infinity) timer = setTimeout(resolve, Math.max(0, deadline - now));
          });
          clearTimeout(timer);
          plan.wake.delete(kick);
        }
      } finally {
        plan.waiting--;
        if (req.onWaiting) plan.listeners.delete(req.onWaiting);
      }
    };
    return {
      outcome: run(),
      cancel: () => {
        cancelled = true;
        deadline = 0;
        kick();
      },
    };
  }

  private wakePlan(plan: Plan): void {
    const wake = [...plan.wake];
    plan.wake.clear();
    for (const w of wake) w();
  }

  // `member` no longer expects its lock: drop the lock if nobody else does.
  private giveUp(plan: Plan, entry: PlanEntry, member: string, reason: 'timeout' | 'cancelled' = 'cancelled'): void {
    entry.reserved.delete(member);
    if (entry.reserved.size > 0) return;
    if (entry.state === 'held') {
      const have = this.run.held.get(entry.target.path);
      if (have) this.run.releaseUnused(have);
    } else if (entry.state === 'taking') {
      plan.current?.cancel(reason);
    } else if (entry.state === 'queued') {
      entry.state = 'dropped';
    }
    this.finishPlan(plan);
  }

  // The plan is over once every lock is settled and every member had its answer.
  private finishPlan(plan: Plan): void {
    if (plan.ended || this.plan !== plan) return;
    const open = plan.entries.some((e) => e.state === 'queued' || e.state === 'taking' || e.reserved.size > 0);
    if (!open) {
      plan.ended = true;
      this.plan = undefined;
    }
  }

  // The batch is over: release what was taken for members that never asked.
  endPlan(): void {
    const plan = this.plan;
    if (!plan) return;
    this.plan = undefined;
    plan.ended = true;
    plan.current?.cancel();
    for (const entry of plan.entries) {
      const have = entry.state === 'held' ? this.run.held.get(entry.target.path) : undefined;
      entry.reserved.clear();
      if (have) this.run.releaseUnused(have);
    }
    this.wakePlan(plan);
  }

  // A request of a later batch of the run: the current batch is over.
  batchSeen(id: string): void {
    if (this.plan && this.plan.id !== id) this.endPlan();
  }
}
