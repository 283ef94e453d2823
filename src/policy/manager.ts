// Lock policy above the stores: per-lock FIFO queues within this helper,
// waiting with timeouts and cancellation, and the holds this helper owns.
// Where a lock lives (flock files, a server) is the store's job (targets.ts
// picks the store); the transports (stdio, socket) sit above.
import { isStoreUnavailable } from '../core/errors';
import type { DeadlockLink, Holder } from '../store/types';
import type { Mode } from '../core/mode';
import { log } from '../core/log';
import { checkLockDir } from '../sys/paths';
import type { KeyStatus, StoreHold } from '../store/contract';
import { slotsMismatch } from '../store/errors';
import { localStore, storeFor } from '../stores';
import { nowMs, secondsSince } from '../core/time';
import { DeadlockWatch } from './deadlockwatch';
import { record, recordGrant, releaseAndRecord, requesterOf } from './history';
import { Notices } from './notices';
import { type Acquisition, type LockEntry, type StoreWait, leaveQueue } from './queue';
import { type AcquireOutcome, type AcquireRequest, type Cancellable, type Hold, holdFor } from './requests';
import { type Target, targetForName, targetForPath } from './targets';
import { Tickets } from './tickets';

export class LockManager {
  private readonly entries = new Map<string, LockEntry>();
  private readonly notices = new Notices();
  private readonly deadlocks = new DeadlockWatch((a, cycle, message) => this.refuseDeadlock(a, cycle, message));
  private readonly tickets = new Tickets(this.notices, this.deadlocks);

  // A name in the local store (in `dir`, or the default lock directory) or in
  // the server store a backend URL names.
  targetForName(name: string, dir?: string, backend?: string): Target {
    return targetForName(name, dir, backend);
  }

  targetForPath(path: string): Target {
    return targetForPath(path);
  }

  // Starts an acquisition. The returned promise settles once: held, busy (try),
  // timeout, or cancelled; `cancel` abandons a wait and guarantees no hold.
  acquire(req: AcquireRequest): { outcome: Promise<AcquireOutcome> } & Cancellable {
    const entry = this.entry(req.target.path);
    let a!: Acquisition;
    const outcome = new Promise<AcquireOutcome>((resolve, reject) => {
      const end = () => {
        a.settled = true;
        clearTimeout(a.timer);
        clearInterval(a.ticker);
        this.tickets.drop(a);
      };
      a = {
        req,
        entry,
        started: nowMs(),
        settled: false,
        resolve: (o) => {
          if (a.settled) return;
          end();
          req.onSettled?.(o);
          resolve(o);
        },
        fail: (err) => {
          if (a.settled) return;
          end();
          req.onSettled?.(undefined, err);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      };
      this.start(a);
    });
    return { outcome, cancel: (reason = 'cancelled') => this.giveUp(a, reason) };
  }

  private start(a: Acquisition): void {
    const { req, entry } = a;
    // Holders inside this helper that disagree on slots: the store would refuse too.
    const other = [...entry.holds].find((h) => h.slots !== req.slots);
    if (other && (req.slots !== undefined || other.slots !== undefined)) {
      a.fail(slotsMismatch(req.target.key, req.slots, { found: other.slots, where: 'in this helper' }));
      this.forget(entry);
      return;
    }
    // FIFO within this helper: a newcomer never overtakes a queued acquisition.
    const once = !req.wait || req.timeout === 0;
    if (entry.queue.length === 0 && this.compatible(entry, req.mode, req.slots)) {
      let got: StoreHold | null | Promise<StoreHold | null>;
      const abort = new AbortController();
      try {
        got = req.target.store.acquire(this.storeRequest(a, false, abort.signal));
      } catch (err) {
        a.fail(err);
        this.forget(entry);
        return;
      }
      if (got instanceof Promise) {
        // A server store answers later: its try is this acquisition's first
        // step, and a timeout or cancel that comes first ends it.
        entry.queue.push(a);
        if (!once) this.tickets.enqueue(a);
        this.startTimers(a);
        this.follow(a, { abort, done: got }, once);
        return;
      }
      if (got) return this.grant(a, got);
    }
    if (once) {
      a.resolve({
        acquired: false,
        waited: secondsSince(a.started),
        reason: req.wait ? 'timeout' : 'busy',
        holders: this.holders(req.target),
      });
      this.forget(entry);
      return;
    }
    log.info('Waiting', { prefix: req.prefix, path: req.target.path });
    this.blocked(a);
    entry.queue.push(a);
    this.tickets.enqueue(a);
    this.startTimers(a);
    this.pump(entry);
  }

  release(hold: Hold): boolean {
    const entry = this.entries.get(hold.target.path);
    if (!entry || !entry.holds.delete(hold)) return false;
    releaseAndRecord(hold);
    this.notices.forget(hold.target.path); // the holders changed: never report the previous one
    this.pump(entry);
    this.forget(entry);
    return true;
  }

  status(target: Target) {
    return target.store.status(target.key);
  }

  list(dir?: string) {
    const d = checkLockDir(dir);
    return {
      dir: d,
      locks: localStore()
        .list(d)
        .map(({ key: _k, ...lock }) => lock),
    };
  }

  // Every lock a server store knows, with holders and waiters in order.
  async listStore(backend: string) {
    const store = storeFor(backend);
    return { backend: store.describe, locks: await store.list() };
  }

  holders(target: Target): Holder[] {
    try {
      const s = target.store.status(target.key);
      return s instanceof Promise ? this.notices.holders(target.path) : s.holders;
    } catch {
      return [];
    }
  }

  heldCount(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.holds.size;
    return n;
  }

  // Releases everything this manager holds and abandons every wait.
  shutdown(): void {
    for (const e of [...this.entries.values()]) {
      for (const a of [...e.queue]) this.giveUp(a, 'cancelled');
      for (const h of [...e.holds]) this.release(h);
    }
  }

  // ---- internals -------------------------------------------------------

  // The holders for a reply: at once from a store that answers at once, after
  // one status read from a server store (so a busy or timed-out reply names them).
  private withHolders(target: Target, then: (holders: Holder[]) => void): void {
    let s: KeyStatus | Promise<KeyStatus>;
    try {
      s = target.store.status(target.key);
    } catch {
      return then([]);
    }
    if (s instanceof Promise) {
      s.then(
        (st) => then(st.holders),
        () => then([]),
      );
    } else then(s.holders);
  }

  // The acquisition waits behind another holder: its caller hears who that is.
  private blocked(a: Acquisition): void {
    if (a.blocked || a.settled) return;
    a.blocked = true;
    const tell = a.req.onBlocked;
    if (tell) this.withHolders(a.req.target, (holders) => !a.settled && tell(holders));
  }

  private storeRequest(a: Acquisition, wait: boolean, signal?: AbortSignal) {
    const { req } = a;
    return {
      key: req.target.key,
      mode: req.mode,
      wait,
      signal,
      slots: req.slots,
      requester: requesterOf(req.owner),
      onLost: (reason: string) => {
        if (a.hold) req.onLost?.(a.hold, reason);
      },
      onQueued: (id: string) => {
        if (a.settled || a.ticketId !== undefined) return;
        a.ticketId = id;
        if (req.owner?.run && req.target.store.waitGraph) this.deadlocks.soon(a);
      },
    };
  }

  private startTimers(a: Acquisition): void {
    const { req } = a;
    if (req.wait && req.timeout !== undefined && req.timeout !== null) {
      a.timer = setTimeout(() => this.giveUp(a, 'timeout'), req.timeout * 1000);
    }
    if (req.wait && req.onWaiting) {
      const every = Math.max(0.05, req.notifyEvery ?? 2) * 1000;
      a.ticker = setInterval(() => this.notices.notify(a), every);
    }
  }

  private entry(id: string): LockEntry {
    let e = this.entries.get(id);
    if (!e) this.entries.set(id, (e = { id, holds: new Set(), queue: [] }));
    return e;
  }

  private forget(entry: LockEntry): void {
    if (entry.holds.size === 0 && entry.queue.length === 0) this.entries.delete(entry.id);
  }

  private compatible(entry: LockEntry, mode: Mode, slots?: number): boolean {
    if (entry.holds.size === 0) return true;
    if (slots !== undefined) return entry.holds.size < slots && [...entry.holds].every((h) => h.slots === slots);
    if (mode === 'exclusive') return false;
    for (const h of entry.holds) if (h.mode === 'exclusive') return false;
    return true;
  }

  private grant(a: Acquisition, held: StoreHold): void {
    const { req } = a;
    const hold = holdFor(req, held);
    a.hold = hold;
    a.entry.holds.add(hold);
    this.notices.forget(req.target.path);
    const waited = secondsSince(a.started);
    recordGrant(hold, waited, a.ticketId);
    a.resolve({ acquired: true, hold, waited, holders: [] });
  }

  // Grants queued acquisitions in order while they fit; the head that meets a
  // holder outside this helper waits in the store.
  private pump(entry: LockEntry): void {
    for (let head = entry.queue[0]; head; head = entry.queue[0]) {
      if (head.storeWait || !this.compatible(entry, head.req.mode, head.req.slots)) return;
      const abort = new AbortController();
      let got: StoreHold | null | Promise<StoreHold | null>;
      try {
        got = head.req.target.store.acquire(this.storeRequest(head, true, abort.signal));
      } catch (err) {
        leaveQueue(head);
        head.fail(err);
        continue;
      }
      if (got instanceof Promise) {
        this.follow(head, { abort, done: got }, false);
        return;
      }
      leaveQueue(head);
      if (got) this.grant(head, got);
      else head.resolve({ acquired: false, waited: secondsSince(head.started), reason: 'busy', holders: [] });
    }
    this.forget(entry);
  }

  // The head waits in the store; `once`: a server store's try, settled busy when it fails.
  private follow(a: Acquisition, wait: StoreWait, once: boolean): void {
    a.storeWait = wait;
    wait.done.then(
      (held) => {
        if (a.storeWait !== wait) {
          // Given up meanwhile: a hold that raced the abort is not wanted.
          if (held) void held.release();
          return;
        }
        if (held) {
          leaveQueue(a);
          this.grant(a, held);
        } else if (once) {
          leaveQueue(a);
          const waited = secondsSince(a.started);
          this.withHolders(a.req.target, (holders) =>
            a.resolve({ acquired: false, waited, reason: a.req.wait ? 'timeout' : 'busy', holders }),
          );
        } else {
          a.storeWait = undefined;
          this.blocked(a); // a server store's first try found it held: the wait begins
        }
        this.pump(a.entry);
      },
      (err) => {
        if (a.storeWait !== wait) return;
        leaveQueue(a);
        a.fail(err);
        this.pump(a.entry);
      },
    );
  }

  // Out of the queue at once; settled once the store's wait (if any) has
  // ended, since only then is "not held" true.
  private withdraw(a: Acquisition, finish: () => void, onError?: (err: unknown) => void): void {
    const wait = leaveQueue(a);
    if (!wait) return finish();
    a.givingUp = true;
    wait.abort.abort();
    wait.done.then((held) => {
      if (held) void held.release();
      finish();
    }, onError ?? finish);
  }

  private giveUp(a: Acquisition, reason: 'timeout' | 'cancelled'): void {
    if (!a || a.settled || a.givingUp) return;
    const finish = () => {
      if (a.ticket || a.waitRecorded) {
        record(a.req.target, {
          event: reason === 'timeout' ? 'timeout' : 'cancel',
          mode: a.req.mode,
          who: requesterOf(a.req.owner),
          wait: a.ticketId,
          waited: secondsSince(a.started),
        });
      }
      const waited = secondsSince(a.started);
      this.withHolders(a.req.target, (holders) => a.resolve({ acquired: false, waited, reason, holders }));
      this.pump(a.entry);
    };
    this.withdraw(a, finish, (err) => {
      // A store that could not be reached says so: nobody was seen holding the lock.
      if (isStoreUnavailable(err)) {
        a.fail(err);
        this.pump(a.entry);
      } else finish();
    });
  }

  // The wait closes a cycle of runs (deadlockwatch.ts): it fails at once.
  private refuseDeadlock(a: Acquisition, cycle: DeadlockLink[], message: string): void {
    const { req } = a;
    record(req.target, {
      event: 'deadlock',
      mode: req.mode,
      who: requesterOf(req.owner),
      wait: a.ticketId,
      reason: message,
      cycle,
    });
    this.withdraw(a, () => {
      a.resolve({
        acquired: false,
        waited: secondsSince(a.started),
        reason: 'deadlock',
        holders: this.holders(req.target),
        cycle,
        message,
      });
      this.pump(a.entry);
    });
  }
}
