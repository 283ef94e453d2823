// Lock policy above the stores: per-lock FIFO queues within this helper,
// waiting with timeouts and cancellation, waiting notices, and the holds this
// helper owns. Where a lock lives (flock files, a server) is the store's job
// (store.ts); the transports (stdio, socket) sit above.
import { describeCycle, findCycle } from './deadlock';
import { ErrorCode, HostlockError, invalidParams, isStoreUnavailable } from '../core/errors';
import { controllerName, currentUser } from '../sys/proc';
import {
  type Holder,
  type Owner,
  type DeadlockLink,
  type HistoryEvent,
  type Requester,
  type LockKey,
} from '../store/types';
import type { Mode } from '../core/mode';
import { log } from '../core/log';
import { checkLockDir } from '../sys/paths';
import type { KeyStatus, LockStore, StoreHold, WaitTicket, Waiter as QueuedWaiter } from '../store/contract';
import { isLocal, localStore, storeFor } from '../stores';
import { secondsSince } from '../core/time';

export interface Target {
  path: string; // the store's id of the lock: a file path for the local store
  name?: string;
  key: LockKey;
  store: LockStore;
}

export interface Hold {
  target: Target;
  mode: Mode;
  held: StoreHold;
  since: Date;
  owner: Owner;
  prefix: string;
  slots?: number;
}

export interface WaitingInfo {
  waited: number;
  holders: Holder[];
  // 1 = next in line; absent when the store shows no queue.
  position?: number;
  queued?: number; // waiters in the queue, this one included
}

export interface AcquireRequest {
  target: Target;
  mode: Mode;
  timeout?: number | null; // seconds; null/undefined: forever; only when wait is true
  wait: boolean;
  owner?: Owner;
  prefix?: string;
  // A counting semaphore: at most this many holders (mode must be exclusive).
  slots?: number;
  notifyEvery?: number; // seconds
  onWaiting?: (info: WaitingInfo) => void;
  // Called once when the request is found to wait (someone else holds the
  // lock), with who holds it; never for a request granted at its first try.
  onBlocked?: (holders: Holder[]) => void;
  // Called once if the hold is lost under its holder after the grant.
  onLost?: (hold: Hold, reason: string) => void;
  // Called synchronously when the outcome is known, before the promise settles,
  // so a caller's bookkeeping is never behind the lock's real state.
  onSettled?: (outcome?: AcquireOutcome, err?: unknown) => void;
}

export interface AcquireOutcome {
  acquired: boolean;
  hold?: Hold;
  waited: number;
  reason?: 'timeout' | 'busy' | 'cancelled' | 'deadlock';
  holders: Holder[];
  // reason 'deadlock': the cycle this wait would have closed, and its description.
  cycle?: DeadlockLink[];
  message?: string;
}

interface Waiter {
  req: AcquireRequest;
  entry: LockEntry;
  started: number;
  hold?: Hold; // once granted, for the store's lost-hold callback
  // The store's wait, while this waiter is at the head of its queue.
  storeWait?: { abort: AbortController; done: Promise<StoreHold | null> };
  timer?: NodeJS.Timeout;
  ticker?: NodeJS.Timeout;
  settle: (o: AcquireOutcome) => void;
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

// A wait outside a run shows in the queue once it has lasted this long: the
// many sub-millisecond handoffs of a busy lock then cost no record at all.
const VISIBLE_AFTER_MS = 50;

// How long a cycle closed by another run's newer wait may stand before this
// wait fails too (that run may have looked just before our record appeared).
const DEADLOCK_RECHECK_MS = 1000;

interface LockEntry {
  id: string;
  holds: Set<Hold>;
  queue: Waiter[];
}

export interface Cancellable {
  // `timeout`: the waiter's own time ran out, and the history says so.
  cancel(reason?: 'timeout' | 'cancelled'): void;
}

// How often, and how far apart, a waiting notice looks again at a lock held by a
// process that has no holder record yet.
const UNRECORDED_LOOKS = 3;
const UNRECORDED_WAIT_MS = 50;

export class LockManager {
  private readonly entries = new Map<string, LockEntry>();
  private deadlockChecks: Waiter[] = [];
  private readonly holderCache = new Map<string, { at: number; holders: Holder[]; waiters: QueuedWaiter[] }>();
  // A server store's status reading under way for waiting notices, by lock path: shared by its waiters.
  private readonly noticeReads = new Map<string, Promise<{ holders: Holder[]; waiters: QueuedWaiter[] } | null>>();

  // A name in the local store (in `dir`, or the default lock directory) or in
  // the server store a backend URL names.
  targetForName(name: string, dir?: string, backend?: string): Target {
    if (isLocal(backend)) {
      const key = localStore().keyForName(name, dir);
      return { path: key.id, name, key, store: localStore() };
    }
    if (dir !== undefined) throw invalidParams('"dir" applies to the local store only; omit it with a backend');
    const store = storeFor(backend);
    // Unique within this helper across stores; shown to users as the lock's place.
    return { path: `${store.describe}#${name}`, name, key: { id: name, name }, store };
  }

  targetForPath(path: string): Target {
    const store = localStore();
    return { path, key: store.keyForPath(path), store };
  }

  // Starts an acquisition. The returned promise settles once: held, busy (try),
  // timeout, or cancelled; `cancel` abandons a wait and guarantees no hold.
  acquire(req: AcquireRequest): { outcome: Promise<AcquireOutcome> } & Cancellable {
    const entry = this.entry(req.target.path);
    let waiter!: Waiter;
    const outcome = new Promise<AcquireOutcome>((resolve, reject) => {
      const end = () => {
        waiter.settled = true;
        clearTimeout(waiter.timer);
        clearInterval(waiter.ticker);
        clearTimeout(waiter.visibleTimer);
        this.dequeue(waiter);
      };
      waiter = {
        req,
        entry,
        started: performance.now(),
        settled: false,
        settle: (o) => {
          if (waiter.settled) return;
          end();
          req.onSettled?.(o);
          resolve(o);
        },
        fail: (err) => {
          if (waiter.settled) return;
          end();
          req.onSettled?.(undefined, err);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      };
      // FIFO within this helper: a newcomer never overtakes a queued waiter.
      // Holders inside this helper that disagree on slots: the store would refuse too.
      const other = [...entry.holds].find((h) => h.slots !== req.slots);
      if (other && (req.slots !== undefined || other.slots !== undefined)) {
        waiter.fail(slotsDisagree(req.target, req.slots, other.slots));
        this.forget(entry);
        return;
      }
      if (entry.queue.length === 0 && this.compatible(entry, req.mode, req.slots)) {
        let got: StoreHold | null | Promise<StoreHold | null>;
        const abort = new AbortController();
        try {
          got = req.target.store.acquire(this.storeRequest(waiter, false, abort.signal));
        } catch (err) {
          waiter.fail(err);
          this.forget(entry);
          return;
        }
        if (got instanceof Promise) {
          // A server store answers later: its try is this waiter's first step,
          // and a timeout or cancel that comes first ends it.
          entry.queue.push(waiter);
          if (req.wait && req.timeout !== 0) this.enqueue(waiter);
          this.startTimers(waiter);
          this.follow(waiter, { abort, done: got }, !req.wait || req.timeout === 0);
          return;
        }
        if (got) return this.grant(waiter, got);
      }
      if (!req.wait || req.timeout === 0) {
        waiter.settle({
          acquired: false,
          waited: secondsSince(waiter.started),
          reason: req.wait ? 'timeout' : 'busy',
          holders: this.holders(req.target),
        });
        this.forget(entry);
        return;
      }
      log.info('Waiting', { prefix: req.prefix, path: req.target.path });
      this.blocked(waiter);
      entry.queue.push(waiter);
      this.enqueue(waiter);
      this.startTimers(waiter);
      this.pump(entry);
    });
    return { outcome, cancel: (reason = 'cancelled') => this.giveUp(waiter, reason) };
  }

  release(hold: Hold): boolean {
    const entry = this.entries.get(hold.target.path);
    if (!entry || !entry.holds.delete(hold)) return false;
    const done = hold.held.release();
    this.record(hold.target, {
      event: 'release',
      mode: hold.mode,
      who: this.requesterOf(hold.owner),
      token: hold.held.token,
    });
    if (done instanceof Promise) {
      done.catch((err) => log.warn(`releasing ${hold.target.path}: ${(err as Error).message}`));
    }
    this.holderCache.delete(hold.target.path); // the holders changed: never report the previous one
    log.info('Released', { prefix: hold.prefix, path: hold.target.path });
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
      return s instanceof Promise ? (this.holderCache.get(target.path)?.holders ?? []) : s.holders;
    } catch {
      return [];
    }
  }

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

  // For waiting notices only: hundreds of waiters on one lock must not each
  // re-read the holders, so their notices share a reading for a moment. A
  // server store's notice waits for a fresh reading (one per lock at a time),
  // so that it names the holder the store has now, as `status` does.
  private noticeState(
    target: Target,
    then: (state: { holders: Holder[]; waiters: QueuedWaiter[] } | null) => void,
    tries = 0,
  ): void {
    const now = performance.now();
    const hit = this.holderCache.get(target.path);
    if (hit && now - hit.at < 250) return then(hit);
    const keep = (holders: Holder[], waiters: QueuedWaiter[]) => {
      if (this.holderCache.size > 4096) this.holderCache.clear();
      const state = { at: performance.now(), holders, waiters };
      this.holderCache.set(target.path, state);
      return state;
    };
    let reading = this.noticeReads.get(target.path);
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
          setTimeout(() => this.noticeState(target, then, tries + 1), UNRECORDED_WAIT_MS).unref();
          return;
        }
        return then(keep(s.holders, s.waiters));
      }
      reading = s.then(
        (st) => keep(st.holders, st.waiters),
        () => null,
      );
      const mine = reading;
      this.noticeReads.set(target.path, mine);
      void mine.then(() => {
        if (this.noticeReads.get(target.path) === mine) this.noticeReads.delete(target.path);
      });
    }
    void reading.then(then);
  }

  private notifyWaiting(w: Waiter): void {
    if (!w.blocked) return; // not waiting behind anyone (yet): nothing to say
    this.noticeState(w.req.target, (state) => {
      // Settled meanwhile, or the reading shows nobody in the way: the grant is on its way.
      if (w.settled || !state || state.holders.length === 0) return;
      const info: WaitingInfo = { waited: secondsSince(w.started), holders: state.holders };
      const i = w.ticketId === undefined ? -1 : state.waiters.findIndex((q) => q.id === w.ticketId);
      if (i >= 0) {
        info.position = i + 1;
        info.queued = state.waiters.length;
      }
      w.req.onWaiting?.(info);
    });
  }

  // The waiter waits behind another holder: its caller hears who that is.
  private blocked(w: Waiter): void {
    if (w.blocked || w.settled) return;
    w.blocked = true;
    const tell = w.req.onBlocked;
    if (tell) this.withHolders(w.req.target, (holders) => !w.settled && tell(holders));
  }

  heldCount(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.holds.size;
    return n;
  }

  // ---- internals -------------------------------------------------------

  private requesterOf(owner: Owner = {}): Requester {
    return { ...owner, pid: owner.pid ?? process.pid, user: owner.user ?? currentUser(), controller: controllerName() };
  }

  private record(target: Target, e: Omit<HistoryEvent, 'key'>): void {
    try {
      target.store.record?.({ ...e, key: target.key });
    } catch {
      /* history is best effort */
    }
  }

  // Makes the wait visible in the store's queue and the history.
  // A run's wait is recorded at once (deadlock detection needs it), others
  // once they have lasted VISIBLE_AFTER_MS.
  private enqueue(w: Waiter): void {
    if (!w.req.target.store.enqueue) {
      // A store that queues its waiters itself (a server store) still records the wait.
      if (!w.req.target.store.record) return;
      w.visibleTimer = setTimeout(() => {
        if (w.settled) return;
        w.waitRecorded = true;
        this.record(w.req.target, { event: 'wait', mode: w.req.mode, who: this.requesterOf(w.req.owner) });
      }, VISIBLE_AFTER_MS);
      return;
    }
    if (w.req.owner?.run) {
      this.writeTicket(w);
      this.checkDeadlockSoon(w);
    } else {
      w.visibleTimer = setTimeout(() => {
        if (!w.settled) this.writeTicket(w);
      }, VISIBLE_AFTER_MS);
    }
  }

  private writeTicket(w: Waiter): void {
    const { store, key } = w.req.target;
    try {
      if (!store.enqueue) return;
      const t = store.enqueue(key, this.requesterOf(w.req.owner), w.req.mode, w.req.slots);
      w.ticket = t;
      const known = (t: WaitTicket) => {
        w.ticketId = t.id;
        w.waitRecorded = true;
        this.holderCache.delete(w.req.target.path);
        this.record(w.req.target, { event: 'wait', mode: w.req.mode, who: this.requesterOf(w.req.owner), wait: t.id });
      };
      if (t instanceof Promise) t.then(known, () => (w.ticket = undefined));
      else known(t);
    } catch (err) {
      log.debug(`no waiter record: ${(err as Error).message}`);
    }
  }

  private dequeue(w: Waiter): void {
    const t = w.ticket;
    if (!t) return;
    w.ticket = undefined;
    const drop = (t: WaitTicket) => {
      try {
        const r = t.remove();
        if (r instanceof Promise) r.catch(() => {});
      } catch {
        /* the record goes with its process anyway */
      }
    };
    if (t instanceof Promise) t.then(drop, () => {});
    else drop(t);
  }

  // Checks run right after the requests of this turn of the event loop have
  // written their waiter records, so they share one reading of the records.
  private checkDeadlockSoon(w: Waiter): void {
    this.deadlockChecks.push(w);
    if (this.deadlockChecks.length > 1) return;
    setImmediate(() => {
      const checks = this.deadlockChecks;
      this.deadlockChecks = [];
      for (const c of checks) if (!c.settled) this.checkDeadlock(c);
    });
  }

  // A wait that closes a cycle of runs fails at once instead of hanging.
  // Our waiter record is written before we look, so of two runs closing a
  // cycle at the same moment at least one sees the other's wait.
  // A cycle that a newer wait closed is left to that wait's run; should it
  // still stand a moment later (that run never looked), we fail after all.
  private checkDeadlock(w: Waiter, last = false): boolean {
    const run = w.req.owner?.run;
    const { store, key } = w.req.target;
    if (!run || !store.waitGraph) return false;
    const me = {
      run,
      keyId: key.id,
      mode: w.req.mode,
      task: w.req.owner?.task,
      host: w.req.owner?.host,
      id: w.ticketId,
    };
    const judge = (statuses: KeyStatus[] | undefined): boolean => {
      if (!statuses || w.settled || w.givingUp) return false;
      const found = findCycle(statuses, me);
      if (!found) return false;
      if (!found.closing && !last) {
        setTimeout(() => this.checkDeadlock(w, true), DEADLOCK_RECHECK_MS).unref();
        return false;
      }
      const cycle = found.links;
      const message = describeCycle(cycle);
      log.warn(message, { prefix: w.req.prefix, path: key.id });
      const i = w.entry.queue.indexOf(w);
      if (i >= 0) w.entry.queue.splice(i, 1);
      const wait = w.storeWait;
      w.storeWait = undefined;
      wait?.abort.abort();
      this.record(w.req.target, {
        event: 'deadlock',
        mode: w.req.mode,
        who: this.requesterOf(w.req.owner),
        wait: w.ticketId,
        reason: message,
        cycle,
      });
      const finish = () => {
        w.settle({
          acquired: false,
          waited: secondsSince(w.started),
          reason: 'deadlock',
          holders: this.holders(w.req.target),
          cycle,
          message,
        });
        this.pump(w.entry);
      };
      if (!wait) finish();
      else {
        w.givingUp = true;
        wait.done.then((held) => {
          if (held) void held.release();
          finish();
        }, finish);
      }
      return true;
    };
    try {
      const g = store.waitGraph(key);
      if (g instanceof Promise) {
        g.then(judge, () => {});
        return false;
      }
      return judge(g);
    } catch (err) {
      log.debug(`no deadlock check: ${(err as Error).message}`);
      return false;
    }
  }

  private storeRequest(w: Waiter, wait: boolean, signal?: AbortSignal) {
    const { req } = w;
    return {
      key: req.target.key,
      mode: req.mode,
      wait,
      signal,
      slots: req.slots,
      requester: this.requesterOf(req.owner),
      onLost: (reason: string) => {
        if (w.hold) req.onLost?.(w.hold, reason);
      },
      onQueued: (id: string) => {
        if (w.settled || w.ticketId !== undefined) return;
        w.ticketId = id;
        if (req.owner?.run && req.target.store.waitGraph) this.checkDeadlockSoon(w);
      },
    };
  }

  private startTimers(w: Waiter): void {
    const { req } = w;
    if (req.wait && req.timeout !== undefined && req.timeout !== null) {
      w.timer = setTimeout(() => this.giveUp(w, 'timeout'), req.timeout * 1000);
    }
    if (req.wait && req.onWaiting) {
      const every = Math.max(0.05, req.notifyEvery ?? 2) * 1000;
      w.ticker = setInterval(() => this.notifyWaiting(w), every);
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

  private grant(w: Waiter, held: StoreHold): void {
    const { req } = w;
    const hold: Hold = {
      target: req.target,
      mode: req.mode,
      held,
      since: held.since,
      owner: req.owner ?? {},
      prefix: req.prefix ?? '',
      slots: req.slots,
    };
    w.hold = hold;
    w.entry.holds.add(hold);
    this.holderCache.delete(req.target.path);
    const waited = secondsSince(w.started);
    // Written before the reply: a holder killed the moment it hears still has its line.
    this.record(req.target, {
      event: 'grant',
      mode: req.mode,
      who: this.requesterOf(req.owner),
      token: held.token,
      wait: w.ticketId,
      waited,
      at: held.since,
    });
    log.info('Acquired', { prefix: hold.prefix, path: req.target.path, mode: req.mode });
    w.settle({ acquired: true, hold, waited, holders: [] });
  }

  // Grants queued waiters in order while they fit; the head that meets a
  // holder outside this helper waits in the store.
  private pump(entry: LockEntry): void {
    for (let head = entry.queue[0]; head; head = entry.queue[0]) {
      if (head.storeWait || !this.compatible(entry, head.req.mode, head.req.slots)) return;
      const abort = new AbortController();
      let got: StoreHold | null | Promise<StoreHold | null>;
      try {
        got = head.req.target.store.acquire(this.storeRequest(head, true, abort.signal));
      } catch (err) {
        entry.queue.shift();
        head.fail(err);
        continue;
      }
      if (got instanceof Promise) {
        this.follow(head, { abort, done: got }, false);
        return;
      }
      entry.queue.shift();
      if (got) this.grant(head, got);
      else head.settle({ acquired: false, waited: secondsSince(head.started), reason: 'busy', holders: [] });
    }
    this.forget(entry);
  }

  // The head waits in the store; `once`: a server store's try, settled busy when it fails.
  private follow(w: Waiter, wait: { abort: AbortController; done: Promise<StoreHold | null> }, once: boolean): void {
    w.storeWait = wait;
    wait.done.then(
      (held) => {
        if (w.storeWait !== wait) {
          // Given up meanwhile: a hold that raced the abort is not wanted.
          if (held) void held.release();
          return;
        }
        w.storeWait = undefined;
        const i = w.entry.queue.indexOf(w);
        if (held) {
          if (i >= 0) w.entry.queue.splice(i, 1);
          this.grant(w, held);
        } else if (once) {
          if (i >= 0) w.entry.queue.splice(i, 1);
          const waited = secondsSince(w.started);
          this.withHolders(w.req.target, (holders) =>
            w.settle({ acquired: false, waited, reason: w.req.wait ? 'timeout' : 'busy', holders }),
          );
        } else this.blocked(w); // a server store's first try found it held: the wait begins
        this.pump(w.entry);
      },
      (err) => {
        if (w.storeWait !== wait) return;
        w.storeWait = undefined;
        const i = w.entry.queue.indexOf(w);
        if (i >= 0) w.entry.queue.splice(i, 1);
        w.fail(err);
        this.pump(w.entry);
      },
    );
  }

  private giveUp(w: Waiter, reason: 'timeout' | 'cancelled'): void {
    if (!w || w.settled || w.givingUp) return;
    const i = w.entry.queue.indexOf(w);
    if (i >= 0) w.entry.queue.splice(i, 1);
    const wait = w.storeWait;
    w.storeWait = undefined;
    const finish = () => {
      if (w.ticket || w.waitRecorded) {
        this.record(w.req.target, {
          event: reason === 'timeout' ? 'timeout' : 'cancel',
          mode: w.req.mode,
          who: this.requesterOf(w.req.owner),
          wait: w.ticketId,
          waited: secondsSince(w.started),
        });
      }
      const waited = secondsSince(w.started);
      this.withHolders(w.req.target, (holders) => w.settle({ acquired: false, waited, reason, holders }));
      this.pump(w.entry);
    };
    if (!wait) return finish();
    // Only once the store's wait has ended is "not held" true.
    w.givingUp = true;
    wait.abort.abort();
    wait.done.then(
      (held) => {
        if (held) void held.release();
        finish();
      },
      (err) => {
        // A store that could not be reached says so: nobody was seen holding the lock.
        if (isStoreUnavailable(err)) {
          w.fail(err);
          this.pump(w.entry);
        } else finish();
      },
    );
  }

  // Releases everything this manager holds and abandons every wait.
  shutdown(): void {
    for (const e of [...this.entries.values()]) {
      for (const w of [...e.queue]) this.giveUp(w, 'cancelled');
      for (const h of [...e.holds]) this.release(h);
    }
  }
}

function slotsDisagree(target: Target, asked?: number, found?: number): HostlockError {
  const say = (n?: number) => (n === undefined ? 'without slots' : `with slots: ${n}`);
  return new HostlockError(
    ErrorCode.SlotsMismatch,
    `'${target.name ?? target.path}' is in use ${say(found)} in this helper, but this request asks ${say(asked)}: every user of a lock must give the same slots`,
    { path: target.path, asked: asked ?? null, found: found ?? null },
  );
}
