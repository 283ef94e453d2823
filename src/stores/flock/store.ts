// The local store: locks are flock(2)'d files in a lock directory, shared with
// flock(1) and Python's fcntl.flock users on the same kernel. Holder records
// sit beside them (holders.ts), a turnstile file gives writers preference over
// readers of other processes (turnstile.ts), and a counter file per lock hands
// out fencing tokens.
import { readdirSync, statSync, writeSync } from 'node:fs';
import { ErrorCode as Code, ErrorCode, HostlockError } from '../../core/errors';
import { basename, dirname, join } from 'node:path';
import { appendHistory } from './journal';
import { historyRecordOf } from '../../store/records';
import { HolderRegistry, holdersOf, lostHoldersOf, type StoredRecord } from './holders';
import { type Holder, type HistoryEvent, type Requester, type LockKey } from '../../store/types';
import { kernelWait, LockFile, type KernelWait } from './lockfile';
import { type Mode } from '../../core/mode';
import { log } from '../../core/log';
import { checkLockDir, ensurePrivateDir, isSharedGroupDir, runtimeDir } from '../../sys/paths';
import { decodeLockName, lockNameOf, LOCK_SUFFIX, lockPathFor } from './names';
import { isStopped, kernelInodeKey, readKernelLocks } from '../../sys/proc';
import type {
  KeyStatus,
  LockStore,
  MaybePromise,
  StoreAcquire,
  StoreHold,
  WaitTicket,
  Waiter,
} from '../../store/contract';
import { nextToken as nextCounter } from './tokens';
import { closeTurnstile, passTurnstile, turnstileOpen, turnstilePathFor } from './turnstile';

// Where a key's file lives and how its records are kept.
interface Place {
  path: string;
  registry: HolderRegistry;
  waiters: HolderRegistry;
  groupShared: boolean;
}

let waitSeq = 0;

export interface FlockStatus extends KeyStatus {
  exists: boolean;
  lost: boolean;
}

class FlockHold implements StoreHold {
  lost = false;
  slot?: number;
  readonly since = new Date();
  constructor(
    readonly key: LockKey,
    readonly mode: Mode,
    readonly token: number,
    readonly file: LockFile,
    readonly place: Place,
    readonly record: string | undefined,
    readonly requester: Requester,
    readonly onLost: ((reason: string) => void) | undefined,
    private readonly forget: (h: FlockHold) => void,
  ) {}

  get fd(): number {
    return this.file.fd;
  }

  release(): void {
    // Unlock first, then drop the record: a record without a lock is filtered
    // out by /proc/locks, a lock without a record would look foreign.
    this.file.close();
    this.place.registry.remove(this.record);
    this.forget(this);
  }
}

export class FlockStore implements LockStore {
  readonly kind = 'local';
  readonly describe = 'local lock files';
  private readonly registries = new Map<string, HolderRegistry>();
  private readonly holds = new Set<FlockHold>();
  private lostTimer: NodeJS.Timeout | undefined;
  private readonly graphs = new Map<string, KeyStatus[]>();

  // The key of a name in a lock directory (the default one when omitted).
  keyForName(name: string, dir?: string): LockKey {
    return { id: lockPathFor(checkLockDir(dir), name), name };
  }

  keyForPath(path: string): LockKey {
    return { id: path };
  }

  // The lock directory a key's records live in; a lock path given directly
  // (the Python `Lock`) keeps its records in the private runtime directory.
  private place(key: LockKey): Place {
    const dir = dirname(key.id);
    const groupShared = isSharedGroupDir(dir);
    const named = key.name !== undefined;
    const base = named ? dir : ensurePrivateDir(runtimeDir());
    return {
      path: key.id,
      groupShared,
      registry: this.registry(join(base, named ? '.holders' : 'holders'), named && groupShared),
      waiters: this.registry(join(base, named ? '.waiters' : 'waiters'), named && groupShared),
    };
  }

  private registry(dir: string, group: boolean): HolderRegistry {
    let r = this.registries.get(dir);
    if (!r) this.registries.set(dir, (r = new HolderRegistry(dir, group ? 0o2770 : 0o700)));
    return r;
  }

  acquire(req: StoreAcquire): MaybePromise<StoreHold | null> {
    const place = this.place(req.key);
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
    return this.wait(req, place, attempt);
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
  private async wait(req: StoreAcquire, place: Place, a: Attempt): Promise<StoreHold | null> {
    const signal = req.signal;
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
        if (signal?.aborted) return null;
        const hold = this.tryOnce(req, place, a);
        if (hold) return hold;
        const got = await waitFor(a.file!, req.mode);
        if (signal?.aborted) return null;
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

  private grant(req: StoreAcquire, place: Place, a: Attempt): FlockHold {
    const file = a.file!;
    a.file = undefined;
    // The writer is in: let readers queue on the lock itself again.
    a.gate?.close();
    a.gate = undefined;
    const token = nextToken(place);
    const since = new Date();
    const record = place.registry.add(file.inodeKey, place.path, req.key.name, {
      ...req.requester,
      mode: req.mode,
      since: since.toISOString(),
      token,
    });
    const hold = new FlockHold(req.key, req.mode, token, file, place, record, req.requester, req.onLost, (h) =>
      this.forget(h),
    );
    this.holds.add(hold);
    this.watchLost();
    return hold;
  }

  // A counting semaphore: slot i is the hidden file `.<lock file>.slot<i>`,
  // locked exclusive; a hold takes whichever slot is free. A waiter waits in
  // the kernel on every slot at once and keeps the first it gets.
  private acquireSlot(req: StoreAcquire, place: Place, n: number): MaybePromise<StoreHold | null> {
    checkSlots(place, n);
    markSlotted(place, n);
    const files: Array<LockFile | undefined> = [];
    try {
      for (let i = 1; i <= n; i++) {
        const f = LockFile.open(slotPath(place.path, i), place.groupShared);
        files.push(f);
        if (f.tryLock('exclusive') && f.stillAtPath()) {
          files[i - 1] = undefined;
          closeAll(files);
          return this.grantSlot(req, place, f, i, n);
        }
      }
    } catch (err) {
      closeAll(files);
      throw err;
    }
    closeAll(files);
    return req.wait ? this.waitSlot(req, place, n) : null;
  }

  private async waitSlot(req: StoreAcquire, place: Place, n: number): Promise<StoreHold | null> {
    const signal = req.signal;
    for (;;) {
      if (signal?.aborted) return null;
      const files: Array<LockFile | undefined> = [];
      let waits: KernelWait[] = [];
      const onAbort = () => waits.forEach((w) => w.cancel());
      signal?.addEventListener('abort', onAbort);
      try {
        for (let i = 1; i <= n; i++) files.push(LockFile.open(slotPath(place.path, i), place.groupShared));
        waits = files.map((f) => kernelWait(f!, 'exclusive'));
        const first = await new Promise<number>((resolve) => {
          let left = waits.length;
          for (const [i, w] of waits.entries()) {
            void w.done.then((got) => {
              if (got) resolve(i);
              else if (--left === 0) resolve(-1);
            });
          }
        });
        // Only the first slot is kept: the other waits end before their files
        // close, which undoes any lock they took meanwhile.
        for (const [i, w] of waits.entries()) if (i !== first) w.cancel();
        await Promise.all(waits.map((w) => w.done));
        if (first >= 0 && !signal?.aborted && files[first]!.stillAtPath()) {
          const f = files[first]!;
          files[first] = undefined;
          return this.grantSlot(req, place, f, first + 1, n);
        }
      } finally {
        signal?.removeEventListener('abort', onAbort);
        closeAll(files);
      }
    }
  }

  private grantSlot(req: StoreAcquire, place: Place, file: LockFile, slot: number, n: number): FlockHold {
    const token = nextToken(place);
    const record = place.registry.add(file.inodeKey, place.path, req.key.name, {
      ...req.requester,
      mode: 'exclusive',
      since: new Date().toISOString(),
      token,
      slot,
      slots: n,
    });
    // Checked again with our record in place: of two requests that disagree
    // at the same instant, at least the later one sees the other.
    try {
      checkSlots(place, n);
    } catch (err) {
      file.close();
      place.registry.remove(record);
      throw err;
    }
    const hold = new FlockHold(req.key, 'exclusive', token, file, place, record, req.requester, req.onLost, (h) =>
      this.forget(h),
    );
    hold.slot = slot;
    this.holds.add(hold);
    this.watchLost();
    return hold;
  }

  private forget(h: FlockHold): void {
    this.holds.delete(h);
    if (this.holds.size === 0 && this.lostTimer) {
      clearInterval(this.lostTimer);
      this.lostTimer = undefined;
    }
  }

  // A person deleting a held lock file breaks exclusion for newcomers; the
  // holder cannot prevent it but must say so.
  private watchLost(): void {
    if (this.lostTimer) return;
    this.lostTimer = setInterval(() => {
      for (const h of this.holds) {
        if (h.lost || h.file.stillAtPath()) continue;
        h.lost = true;
        h.place.registry.update(h.record, { lost: true });
        const why = `lock file ${h.place.path} was deleted or replaced while held: others may now hold it too`;
        log.warn(why, { path: h.place.path });
        this.record({ event: 'lost', key: h.key, mode: h.mode, who: h.requester, token: h.token, reason: why });
        h.onLost?.(why);
      }
    }, 2000);
    this.lostTimer.unref();
  }

  // `held` and `mode` describe the file now at the path; `holders` also lists
  // holds lost to a deletion or replacement (`lost: true`), whoever holds them.
  status(key: LockKey): FlockStatus {
    const place = this.place(key);
    const st = statSync(place.path, { bigint: true, throwIfNoEntry: false });
    const inode = st ? kernelInodeKey(st.dev, st.ino) : null;
    const kernel = readKernelLocks();
    const current = inode ? holdersOf(place.registry, inode, kernel) : [];
    const records = place.registry.readPath(place.path);
    const lostHolders = lostHoldersOf(records, place.path, inode, kernel);
    const lost = lostHolders.length > 0 || [...this.holds].some((h) => h.place.path === place.path && h.lost);
    const slotted = slotHoldersOf(records, kernel);
    const [holder] = current;
    const [slotHolder] = slotted;
    const status = {
      key,
      exists: !!st,
      held: current.length + slotted.length > 0,
      mode: holder ? holder.mode : slotHolder ? ('exclusive' as const) : null,
      ...(slotHolder ? { slots: slotHolder.slots } : {}),
      holders: markStopped([...current, ...slotted, ...lostHolders]),
      waiters: [] as Waiter[],
      lost,
    };
    // Read only when asked for (a timeout's result needs the holders only).
    let waiters: Waiter[] | undefined;
    Object.defineProperty(status, 'waiters', {
      enumerable: true,
      get: () => (waiters ??= queueOf(place.waiters.readPath(place.path))),
    });
    return status;
  }

  // Every lock in a directory, free or held, and the holds lost to a deletion.
  list(dir?: string): Array<KeyStatus & { name: string; path: string }> {
    const d = checkLockDir(dir);
    const registry = this.registry(join(d, '.holders'), isSharedGroupDir(d));
    const kernel = readKernelLocks();
    const all = registry.readAll();
    const waiting = this.registry(join(d, '.waiters'), isSharedGroupDir(d)).readAll();
    const waitersOf = (path: string) => queueOf(waiting.filter((w) => w.path === path));
    const locks = [];
    const listed = new Set<string>();
    for (const f of readdirSync(d).sort()) {
      if (f.startsWith('.') || !f.endsWith(LOCK_SUFFIX)) continue;
      const path = join(d, f);
      const st = statSync(path, { bigint: true, throwIfNoEntry: false });
      if (!st?.isFile()) continue;
      listed.add(path);
      const inode = kernelInodeKey(st.dev, st.ino);
      const recs = all.filter((r) => r.inode === inode);
      const holders: Holder[] = holdersOf(registry, inode, kernel);
      const slotted = slotHoldersOf(
        all.filter((r) => r.path === path),
        kernel,
      );
      holders.push(...slotted);
      const [holder] = holders;
      const [slotHolder] = slotted;
      const stem = basename(f, LOCK_SUFFIX);
      const name = lockNameOf(path) ?? recs[0]?.name ?? stem;
      locks.push({
        key: { id: path, name },
        name,
        path,
        held: holders.length > 0,
        mode: holder ? holder.mode : null,
        ...(slotHolder ? { slots: slotHolder.slots } : {}),
        holders: markStopped([...holders, ...lostHoldersOf(all, path, inode, kernel)]),
        waiters: waitersOf(path),
      });
    }
    // Deleted under their holders: gone from the directory, still worth a line.
    for (const path of new Set(all.map((r) => r.path))) {
      if (listed.has(path) || dirname(path) !== d) continue;
      const holders = lostHoldersOf(all, path, null, kernel);
      if (!holders.length) continue;
      const name =
        all.find((r) => r.path === path)?.name ?? decodeLockName(basename(path, LOCK_SUFFIX)) ?? basename(path);
      locks.push({
        key: { id: path, name },
        name,
        path,
        held: false,
        mode: null,
        holders: markStopped(holders),
        waiters: waitersOf(path),
      });
    }
    // Files locked by their own path (`hostlock flock PATH`, or a shell's
    // descriptor), held now: their records are here, the files elsewhere.
    for (const path of new Set(all.filter((r) => r.name === undefined).map((r) => r.path))) {
      if (listed.has(path) || dirname(path) === d) continue;
      const st = statSync(path, { bigint: true, throwIfNoEntry: false });
      const inode = st ? kernelInodeKey(st.dev, st.ino) : null;
      const holders = [
        ...(inode ? holdersOf(registry, inode, kernel) : []),
        ...lostHoldersOf(all, path, inode, kernel),
      ];
      if (!holders.length) continue;
      const held = holders.filter((h) => !h.lost);
      locks.push({
        key: { id: path, name: path },
        name: path,
        path,
        held: held.length > 0,
        mode: held[0]?.mode ?? null,
        holders: markStopped(holders),
        waiters: [],
      });
    }
    return locks;
  }

  close(): void {
    for (const h of [...this.holds]) h.release();
  }

  // A waiter record, written and removed like a holder record, in `.waiters`.
  enqueue(key: LockKey, requester: Requester, mode: Mode, slots?: number): WaitTicket {
    const place = this.place(key);
    const id = `${process.pid}-${String(++waitSeq).padStart(10, '0')}`;
    const rec = place.waiters.add('w', place.path, key.name, {
      ...requester,
      mode,
      since: new Date().toISOString(),
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

  // The history of named locks lives in their directory (history.ts).
  record(e: HistoryEvent): void {
    if (e.key.name === undefined) return;
    const rec = historyRecordOf(e);
    const dir = dirname(e.key.id);
    appendHistory(dir, rec, isSharedGroupDir(dir), URGENT.has(e.event));
  }
}

// History lines written before the helper goes on (the rest at the end of the
// event loop's turn): a grant, before its reply, so that a holder killed the
// moment it hears still has its line; and what a person looks for after an
// incident.
const URGENT = new Set(['grant', 'lost', 'deadlock', 'break']);

// Waiter records in queue order: longest waiting first.
function queueOf(records: StoredRecord[]): Waiter[] {
  return records
    .map(({ name: _n, path: _p, inode: _i, helper_start: _s, ...w }) => w as Waiter)
    .sort((a, b) => (a.since < b.since ? -1 : a.since > b.since ? 1 : (a.id ?? '') < (b.id ?? '') ? -1 : 1));
}

// A holder whose process (or helper) is stopped (SIGSTOP, ^Z) will not let go by itself.
function markStopped(holders: Holder[]): Holder[] {
  for (const h of holders) {
    if (!h.foreign && (isStopped(h.pid) || (h.helper_pid !== undefined && isStopped(h.helper_pid)))) h.stopped = true;
    else if (h.foreign && isStopped(h.pid)) h.stopped = true;
  }
  return holders;
}

interface Attempt {
  file: LockFile | undefined;
  gate?: LockFile;
  passedGate: boolean;
}

function closeAll(files: Array<LockFile | undefined>): void {
  for (const f of files) f?.close();
}

function slotPath(lockPath: string, i: number): string {
  return turnstilePathFor(lockPath).replace(/\.turnstile$/, `.slot${i}`);
}

// Present once a lock has been taken with slots: only then does a plain grant
// look for slot holders (one stat, not a read of the records, on every grant).
function slotsMarker(lockPath: string): string {
  return turnstilePathFor(lockPath).replace(/\.turnstile$/, '.slots');
}

function markSlotted(place: Place, n: number): void {
  LockFile.open(place.path, place.groupShared).close(); // so that status lists the name
  const f = LockFile.open(slotsMarker(place.path), place.groupShared);
  try {
    const text = Buffer.from(`${n}\n`);
    writeSync(f.fd, text, 0, text.length, 0);
  } finally {
    f.close();
  }
}

// Slot holders of a lock: live records of its path that hold a slot file.
function slotHoldersOf(records: StoredRecord[], kernel: ReturnType<typeof readKernelLocks>): Holder[] {
  return records
    .filter((r) => r.slot !== undefined && (kernel === null || kernel.some((k) => k.inode === r.inode)))
    .map(({ name: _n, path: _p, inode: _i, helper_start: _s, ...h }) => h);
}

function slotsMismatch(name: string, asked: number | undefined, found: number | undefined, who: Holder): HostlockError {
  const say = (n: number | undefined) => (n === undefined ? 'without slots' : `with slots: ${n}`);
  const by = [`pid ${who.pid}`, who.run ? `run ${who.run}` : '', who.task ? `task ${who.task}` : '']
    .filter(Boolean)
    .join(', ');
  return new HostlockError(
    Code.SlotsMismatch,
    `'${name}' is in use ${say(found)} (${by}), but this request asks ${say(asked)}: every user of a lock must give the same slots`,
    { asked: asked ?? null, found: found ?? null },
  );
}

// Every live holder and waiter of a slotted lock asks for the same count, and
// nobody holds it without slots.
function checkSlots(place: Place, n: number): void {
  const kernel = readKernelLocks();
  const st = statSync(place.path, { bigint: true, throwIfNoEntry: false });
  const inode = st ? kernelInodeKey(st.dev, st.ino) : null;
  const fallback = basename(place.path, LOCK_SUFFIX);
  for (const r of place.registry.readPath(place.path)) {
    const live = kernel === null || kernel.some((k) => k.inode === r.inode);
    if (!live || r.lost) continue;
    if (r.slot === undefined && r.inode === inode) throw slotsMismatch(r.name ?? fallback, n, undefined, r);
    if (r.slot !== undefined && r.slots !== n) throw slotsMismatch(r.name ?? fallback, n, r.slots, r);
  }
  for (const w of place.waiters.readPath(place.path)) {
    if (w.slots !== n) throw slotsMismatch(w.name ?? fallback, n, w.slots, w);
  }
}

// A plain grant of a lock that slot holders hold is refused.
function refuseIfSlotted(place: Place): void {
  if (!statSync(slotsMarker(place.path), { throwIfNoEntry: false })) return;
  const [held] = slotHoldersOf(place.registry.readPath(place.path), readKernelLocks());
  if (held)
    throw slotsMismatch(
      place.registry.readPath(place.path)[0]?.name ?? basename(place.path, LOCK_SUFFIX),
      undefined,
      held.slots,
      held,
    );
}

function closeAttempt(a: Attempt): void {
  a.file?.close();
  a.file = undefined;
  a.gate?.close();
  a.gate = undefined;
}

// Fencing tokens: a counter file beside each lock (hidden, like the turnstile).
function nextToken(place: Place): number {
  const path = turnstilePathFor(place.path).replace(/\.turnstile$/, '.token');
  return nextCounter(path, place.groupShared, place.path);
}
