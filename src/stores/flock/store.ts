// The local store: locks are flock(2)'d files in a lock directory, shared with
// flock(1) and Python's fcntl.flock users on the same kernel. Holder records
// sit beside them (holders.ts), a turnstile file gives writers preference over
// readers of other processes (turnstile.ts), a counter file per lock hands out
// fencing tokens (tokens.ts), and slot files make a counting semaphore (slots.ts).
import { setMaxListeners } from 'node:events';
import { dirname } from 'node:path';
import { ErrorCode, HostlockError } from '../../core/errors';
import { appendHistory } from './journal';
import { historyRecordOf } from '../../store/records';
import type { HistoryEvent, Requester, LockKey } from '../../store/types';
import { kernelWait, LockFile, type KernelWait } from './lockfile';
import { type Mode } from '../../core/mode';
import { lockPathFor } from './names';
import type { KeyStatus, LockStore, MaybePromise, StoreAcquire, StoreHold, WaitTicket } from '../../store/contract';
import { AbortError, isAbort, storeClosed } from '../../store/errors';
import { FlockHold } from './hold';
import { type FlockStatus, listDir, statusOf } from './listing';
import { LostWatch } from './lostwatch';
import { besideLock, groupShared, lockDir, type Place, placeOf } from './place';
import { checkSlots, markSlotted, refuseIfSlotted, trySlots, waitSlots } from './slots';
import { nextToken } from './tokens';
import { closeTurnstile, passTurnstile, turnstileOpen } from './turnstile';
import { isoTime } from '../../core/time';

export type { FlockStatus } from './listing';

let waitSeq = 0;

interface Attempt {
  file: LockFile | undefined;
  gate?: LockFile;
  passedGate: boolean;
}

export class FlockStore implements LockStore {
  readonly kind = 'local';
  readonly describe = 'local lock files';
  private readonly lost = new LostWatch((e) => this.record(e));
  private readonly graphs = new Map<string, KeyStatus[]>();
  private closed = false;
  // Aborts every wait in flight when the store is closed. Made by the first
  // wait: a store that only takes free locks (`hostlock run`, most of the
  // time) never needs one, and the first costs a fifth of a millisecond.
  private closingWaits?: AbortController;

  private get closing(): AbortController {
    if (!this.closingWaits) {
      this.closingWaits = new AbortController();
      setMaxListeners(0, this.closingWaits.signal); // one listener per wait in flight, however many
    }
    return this.closingWaits;
  }

  // The key of a name in a lock directory (the default one when omitted).
  keyForName(name: string, dir?: string): LockKey {
    return { id: lockPathFor(lockDir(dir), name), name };
  }

  keyForPath(path: string): LockKey {
    return { id: path };
  }

  // Held, or null when busy (a try); a wait resolves held or rejects (an
  // AbortError once `signal` aborts it, with nothing held).
  acquire(req: StoreAcquire): MaybePromise<StoreHold | null> {
    if (this.closed) throw storeClosed(this.describe);
    const place = placeOf(req.key);
    if (req.slots !== undefined) return this.acquireSlot(req, place, req.slots);
    const attempt: Attempt = { file: undefined, passedGate: false };
    try {
      const hold = this.tryOnce(req, place, attempt);
      if (hold || !req.wait) {
        if (!hold) closeAttempt(attempt);
        return hold;
      }
    } catch (err) {
      closeAttempt(attempt);
      throw err;
    }
    return this.untilClosed(req, (signal) => this.wait(req, place, attempt, signal));
  }

  // One try: held, or null when busy. A try never waits, so it answers at once.
  tryAcquire(req: Omit<StoreAcquire, 'wait' | 'signal'>): StoreHold | null {
    return this.acquire({ ...req, wait: false }) as StoreHold | null;
  }

  // A wait ends when its own signal aborts (AbortError) or the store closes (storeClosed).
  private async untilClosed<T>(req: StoreAcquire, wait: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const both = new AbortController();
    const end = () => both.abort();
    if (req.signal?.aborted) both.abort();
    req.signal?.addEventListener('abort', end);
    this.closing.signal.addEventListener('abort', end);
    try {
      return await wait(both.signal);
    } catch (err) {
      if (isAbort(err) && this.closed && !req.signal?.aborted)
        throw storeClosed(this.describe, 'while this request waited');
      throw err;
    } finally {
      req.signal?.removeEventListener('abort', end);
      this.closing.signal.removeEventListener('abort', end);
    }
  }

  // One non-blocking attempt. A reader yields to a writer of another process
  // waiting at the turnstile, unless it has already passed it.
  private tryOnce(req: StoreAcquire, place: Place, a: Attempt): FlockHold | null {
    if (req.mode === 'shared' && !a.passedGate && !turnstileOpen(place.path, place.groupShared)) return null;
    for (let tries = 0; tries < 100; tries++) {
      a.file ??= LockFile.open(place.path, place.groupShared, req.key.name);
      if (!a.file.tryLock(req.mode)) return null;
      if (a.file.stillAtPath()) {
        refuseIfSlotted(place);
        return this.grant(req, place, a);
      }
      // We locked an inode that was unlinked or replaced meanwhile: start over on the new file.
      a.file.close();
      a.file = undefined;
    }
    throw new HostlockError(ErrorCode.IoError, `lock file ${place.path} keeps being replaced; giving up`, {
      path: place.path,
    });
  }

  // Waits in the kernel until held or aborted. Aborting kills the waiting
  // flock(1) child and settles only once it has exited: it shares our open
  // file description, and one that took the lock just before the kill holds it
  // until it exits. Only then is "not held" true.
  private async wait(req: StoreAcquire, place: Place, a: Attempt, signal: AbortSignal): Promise<StoreHold> {
    let current: KernelWait | undefined;
    const onAbort = () => current?.cancel();
    signal?.addEventListener('abort', onAbort);
    const waitFor = async (file: LockFile, mode: Mode): Promise<boolean> => {
      if (signal?.aborted) return false;
      current = kernelWait(file, mode);
      try {
        return await current.done;
      } finally {
        current = undefined;
      }
    };
    try {
      // Writer preference across processes (turnstile.ts).
      if (req.mode === 'shared') {
        await passTurnstile(place.path, place.groupShared, waitFor);
        a.passedGate = true;
      } else {
        a.gate = await closeTurnstile(place.path, place.groupShared, waitFor);
      }
      for (;;) {
        if (signal?.aborted) throw new AbortError();
        const hold = this.tryOnce(req, place, a);
        if (hold) return hold;
        const got = await waitFor(a.file!, req.mode);
        if (signal?.aborted) throw new AbortError();
        if (got && a.file!.stillAtPath()) {
          refuseIfSlotted(place);
          return this.grant(req, place, a);
        }
        // Locked a deleted inode, or the waiter child failed: try afresh.
        a.file?.close();
        a.file = undefined;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      closeAttempt(a); // closing our descriptor undoes any lock the killed child may have just taken
    }
  }

  // The attempt's file is locked: it becomes a hold with a token and a record.
  // Without a token nothing is held (the file is closed, unlocking it).
  private grant(req: StoreAcquire, place: Place, a: Attempt): FlockHold {
    const file = a.file!;
    a.file = undefined;
    // The writer is in: let readers queue on the lock itself again.
    a.gate?.close();
    a.gate = undefined;
    return this.hold(req, place, file, req.mode);
  }

  private hold(req: StoreAcquire, place: Place, file: LockFile, mode: Mode, slot?: number): FlockHold {
    let token: number;
    try {
      token = nextToken(besideLock(place.path, 'token'), place.groupShared, place.path);
    } catch (err) {
      file.close();
      throw err;
    }
    const since = new Date();
    const record = place.registry.add(file.inodeKey, place.path, req.key.name, {
      ...req.requester,
      mode,
      since: isoTime(since),
      token,
      ...(slot !== undefined && { slot, slots: req.slots }),
    });
    const hold = new FlockHold(
      req.key,
      mode,
      token,
      file,
      place,
      record,
      req.requester,
      req.onLost,
      (h) => this.lost.delete(h),
      slot,
    );
    this.lost.add(hold);
    return hold;
  }

  // A counting semaphore (slots.ts).
  private acquireSlot(req: StoreAcquire, place: Place, n: number): MaybePromise<StoreHold | null> {
    checkSlots(place, n);
    markSlotted(place, n);
    const free = trySlots(place, n);
    if (free) return this.grantSlot(req, place, free.file, free.slot, n);
    if (!req.wait) return null;
    return this.untilClosed(req, (signal) => waitSlots(place, n, signal)).then((s) =>
      this.grantSlot(req, place, s.file, s.slot, n),
    );
  }

  private grantSlot(req: StoreAcquire, place: Place, file: LockFile, slot: number, n: number): FlockHold {
    const hold = this.hold(req, place, file, 'exclusive', slot);
    // Checked again with our record in place: of two requests that disagree
    // at the same instant, at least the later one sees the other.
    try {
      checkSlots(place, n);
    } catch (err) {
      hold.release();
      throw err;
    }
    return hold;
  }

  status(key: LockKey): FlockStatus {
    const place = placeOf(key);
    return statusOf(key, place, this.lost.lostHere(place.path));
  }

  // Every lock in a directory, free or held, and the holds lost to a deletion.
  list(dir?: string): Array<KeyStatus & { name: string; path: string }> {
    return listDir(dir);
  }

  // Releases every hold of this store; waits in flight end with storeClosed.
  close(): void {
    this.closed = true;
    this.closingWaits?.abort();
    for (const h of this.lost.all()) h.release();
  }

  // A waiter record, written and removed like a holder record, in `.waiters`.
  enqueue(key: LockKey, requester: Requester, mode: Mode, slots?: number): WaitTicket {
    const place = placeOf(key);
    const id = `${process.pid}-${String(++waitSeq).padStart(10, '0')}`;
    const rec = place.waiters.add('w', place.path, key.name, {
      ...requester,
      mode,
      since: isoTime(),
      id,
      slots,
    });
    return { id, remove: () => place.waiters.remove(rec) };
  }

  // The locks of a named key's directory; locks taken by path have no graph.
  // One reading serves every check of the same turn of the event loop.
  waitGraph(key: LockKey): KeyStatus[] | undefined {
    if (key.name === undefined) return undefined;
    const dir = dirname(key.id);
    let g = this.graphs.get(dir);
    if (!g) {
      if (this.graphs.size === 0) setImmediate(() => this.graphs.clear());
      this.graphs.set(dir, (g = this.list(dir)));
    }
    return g;
  }

  // The history of named locks lives in their directory (journal.ts).
  record(e: HistoryEvent): void {
    if (e.key.name === undefined) return;
    const rec = historyRecordOf(e);
    const dir = dirname(e.key.id);
    appendHistory(dir, rec, groupShared(dir), URGENT.has(e.event));
  }
}

// History lines written before the helper goes on (the rest at the end of the
// event loop's turn): a grant, before its reply, so that a holder killed the
// moment it hears still has its line; and what a person looks for after an
// incident.
const URGENT = new Set(['grant', 'lost', 'deadlock', 'break']);

function closeAttempt(a: Attempt): void {
  a.file?.close();
  a.file = undefined;
  a.gate?.close();
  a.gate = undefined;
}
