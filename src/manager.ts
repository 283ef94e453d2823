// Lock policy above the engine: per-path queues, waiting with timeouts and
// cancellation, holder records, status. Transports (stdio, socket) sit above.
import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, HostlockError } from './errors';
import { HolderRegistry, controllerName, holdersOf, lostHoldersOf, type Holder, type Owner } from './holders';
import { kernelWait, LockFile, type KernelWait, type Mode } from './lockfile';
import { log } from './log';
import { openTurnstile, turnstileOpen } from './turnstile';
import {
  checkLockDir,
  decodeLockName,
  lockNameOf,
  ensurePrivateDir,
  isSharedGroupDir,
  LOCK_SUFFIX,
  lockPathFor,
  runtimeDir,
} from './names';
import { currentUser, kernelInodeKey, readKernelLocks } from './proc';

export interface Target {
  path: string;
  name?: string;
  registry: HolderRegistry;
  groupShared: boolean;
}

export interface Hold {
  target: Target;
  mode: Mode;
  file: LockFile;
  since: Date;
  record?: string;
  owner: Owner;
  prefix: string;
  lost: boolean;
}

export interface WaitingInfo {
  waited: number;
  holders: Holder[];
}

export interface AcquireRequest {
  target: Target;
  mode: Mode;
  timeout?: number | null; // seconds; null/undefined: forever; only when wait is true
  wait: boolean;
  owner?: Owner;
  prefix?: string;
  notifyEvery?: number; // seconds
  onWaiting?: (info: WaitingInfo) => void;
  // Called synchronously when the outcome is known, before the promise settles,
  // so a caller's bookkeeping is never behind the lock's real state.
  onSettled?: (outcome?: AcquireOutcome, err?: unknown) => void;
}

export interface AcquireOutcome {
  acquired: boolean;
  hold?: Hold;
  waited: number;
  reason?: 'timeout' | 'busy' | 'cancelled';
  holders: Holder[];
}

interface Waiter {
  req: AcquireRequest;
  entry: PathEntry;
  file?: LockFile;
  kernel?: KernelWait;
  // Turnstile state (see turnstile.ts): a waiting writer holds `gate`; a reader
  // that found a writer waiting sets `atGate`, and `passed` once let through.
  gate?: LockFile;
  atGate?: boolean;
  passed?: boolean;
  started: number;
  timer?: NodeJS.Timeout;
  ticker?: NodeJS.Timeout;
  settle: (o: AcquireOutcome) => void;
  fail: (err: unknown) => void;
  settled: boolean;
  givingUp?: boolean; // cancelled; settles once its kernel waiter has exited
}

interface PathEntry {
  path: string;
  holds: Set<Hold>;
  queue: Waiter[];
}

export interface Cancellable {
  cancel(): void;
}

const registries = new Map<string, HolderRegistry>();
function registryFor(dir: string, group: boolean): HolderRegistry {
  let r = registries.get(dir);
  if (!r) registries.set(dir, (r = new HolderRegistry(dir, group ? 0o2770 : 0o700)));
  return r;
}

function seconds(sinceMs: number): number {
  return Math.round((performance.now() - sinceMs) * 1000) / 1e6;
}

export class LockManager {
  private readonly entries = new Map<string, PathEntry>();
  private readonly lostTimer: NodeJS.Timeout;
  private readonly holderCache = new Map<string, { at: number; holders: Holder[] }>();

  constructor() {
    // A person deleting a held lock file breaks exclusion for newcomers; the
    // holder cannot prevent it but must say so.
    this.lostTimer = setInterval(() => this.checkLost(), 2000);
    this.lostTimer.unref();
  }

  targetForName(name: string, dir?: string): Target {
    const d = checkLockDir(dir);
    const group = isSharedGroupDir(d);
    return { path: lockPathFor(d, name), name, registry: registryFor(join(d, '.holders'), group), groupShared: group };
  }

  targetForPath(path: string): Target {
    const d = dirname(path);
    const group = isSharedGroupDir(d);
    const reg = registryFor(join(ensurePrivateDir(runtimeDir()), 'holders'), false);
    return { path, registry: reg, groupShared: group };
  }

  // Starts an acquisition. The returned promise settles once: held, busy (try),
  // timeout, or cancelled; `cancel` abandons a wait and guarantees no hold.
  acquire(req: AcquireRequest): { outcome: Promise<AcquireOutcome> } & Cancellable {
    const entry = this.entry(req.target.path);
    let waiter!: Waiter;
    const outcome = new Promise<AcquireOutcome>((resolve, reject) => {
      waiter = {
        req,
        entry,
        started: performance.now(),
        settled: false,
        settle: (o) => {
          if (waiter.settled) return;
          waiter.settled = true;
          clearTimeout(waiter.timer);
          clearInterval(waiter.ticker);
          req.onSettled?.(o);
          resolve(o);
        },
        fail: (err) => {
          if (waiter.settled) return;
          waiter.settled = true;
          clearTimeout(waiter.timer);
          clearInterval(waiter.ticker);
          req.onSettled?.(undefined, err);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      };
      try {
        // FIFO within this helper: a newcomer never overtakes a queued waiter.
        if (entry.queue.length === 0 && this.compatible(entry, req.mode) && this.attempt(waiter)) return;
      } catch (err) {
        this.dropFile(waiter);
        waiter.fail(err);
        return;
      }
      if (!req.wait || req.timeout === 0) {
        this.dropFile(waiter);
        waiter.settle({
          acquired: false,
          waited: seconds(waiter.started),
          reason: req.wait ? 'timeout' : 'busy',
          holders: this.holders(req.target),
        });
        return;
      }
      log.info('Waiting', { prefix: req.prefix, path: req.target.path });
      entry.queue.push(waiter);
      if (req.timeout !== undefined && req.timeout !== null) {
        waiter.timer = setTimeout(() => this.giveUp(waiter, 'timeout'), req.timeout * 1000);
      }
      if (req.onWaiting) {
        const every = Math.max(0.05, req.notifyEvery ?? 2) * 1000;
        waiter.ticker = setInterval(() => {
          req.onWaiting!({ waited: seconds(waiter.started), holders: this.noticeHolders(req.target) });
        }, every);
      }
      this.pump(entry);
    });
    return { outcome, cancel: () => this.giveUp(waiter, 'cancelled') };
  }

  release(hold: Hold): boolean {
    const entry = this.entries.get(hold.target.path);
    if (!entry || !entry.holds.delete(hold)) return false;
    // Unlock first, then drop the record: a record without a lock is filtered
    // out by /proc/locks, a lock without a record would look foreign.
    hold.file.close();
    hold.target.registry.remove(hold.record);
    this.holderCache.delete(hold.target.path); // the holders changed: never report the previous one
    log.info('Released', { prefix: hold.prefix, path: hold.target.path });
    this.pump(entry);
    this.forget(entry);
    return true;
  }

  // `held` and `mode` describe the file now at the path; `holders` also lists
  // holds lost to a deletion or replacement (`lost: true`), whoever holds them.
  status(target: Target): { exists: boolean; held: boolean; mode: Mode | null; holders: Holder[]; lost: boolean } {
    const st = statSync(target.path, { bigint: true, throwIfNoEntry: false });
    const inode = st ? kernelInodeKey(st.dev, st.ino) : null;
    const kernel = readKernelLocks();
    const current = inode ? holdersOf(target.registry, inode, kernel) : [];
    const lostHolders = lostHoldersOf(target.registry.readPath(target.path), target.path, inode, kernel);
    const lost = lostHolders.length > 0 || [...(this.entries.get(target.path)?.holds ?? [])].some((h) => h.lost);
    return {
      exists: !!st,
      held: current.length > 0,
      mode: current.length ? current[0].mode : null,
      holders: [...current, ...lostHolders],
      lost,
    };
  }

  list(dir?: string): {
    dir: string;
    locks: Array<{ name: string; path: string; held: boolean; mode: Mode | null; holders: Holder[] }>;
  } {
    const d = checkLockDir(dir);
    const registry = registryFor(join(d, '.holders'), isSharedGroupDir(d));
    const kernel = readKernelLocks();
    const all = registry.readAll();
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
      const holders = holdersOf(registry, inode, kernel);
      const stem = basename(f, LOCK_SUFFIX);
      const name = lockNameOf(path) ?? (recs[0] as { name?: string } | undefined)?.name ?? stem;
      locks.push({
        name,
        path,
        held: holders.length > 0,
        mode: holders.length ? holders[0].mode : null,
        holders: [...holders, ...lostHoldersOf(all, path, inode, kernel)],
      });
    }
    // Deleted under their holders: gone from the directory, still worth a line.
    for (const path of new Set(all.map((r) => r.path))) {
      if (listed.has(path) || dirname(path) !== d) continue;
      const holders = lostHoldersOf(all, path, null, kernel);
      if (!holders.length) continue;
      const name =
        all.find((r) => r.path === path)?.name ?? decodeLockName(basename(path, LOCK_SUFFIX)) ?? basename(path);
      locks.push({ name, path, held: false, mode: null, holders });
    }
    return { dir: d, locks };
  }

  holders(target: Target): Holder[] {
    try {
      return this.status(target).holders;
    } catch {
      return [];
    }
  }

  // For waiting notices only: hundreds of waiters on one lock must not each
  // re-read /proc/locks, so their notices share a reading for a moment.
  private noticeHolders(target: Target): Holder[] {
    const now = performance.now();
    const hit = this.holderCache.get(target.path);
    if (hit && now - hit.at < 250) return hit.holders;
    const holders = this.holders(target);
    if (this.holderCache.size > 4096) this.holderCache.clear();
    this.holderCache.set(target.path, { at: now, holders });
    return holders;
  }

  heldCount(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.holds.size;
    return n;
  }

  // ---- internals -------------------------------------------------------

  private entry(path: string): PathEntry {
    let e = this.entries.get(path);
    if (!e) this.entries.set(path, (e = { path, holds: new Set(), queue: [] }));
    return e;
  }

  private forget(entry: PathEntry): void {
    if (entry.holds.size === 0 && entry.queue.length === 0) this.entries.delete(entry.path);
  }

  private compatible(entry: PathEntry, mode: Mode): boolean {
    if (entry.holds.size === 0) return true;
    if (mode === 'exclusive') return false;
    for (const h of entry.holds) if (h.mode === 'exclusive') return false;
    return true;
  }

  // One non-blocking kernel attempt for this waiter; true when it now holds.
  private attempt(w: Waiter): boolean {
    const { target, mode } = w.req;
    // A reader yields to a writer of another process waiting at the turnstile.
    if (mode === 'shared' && !w.passed && !turnstileOpen(target.path, target.groupShared)) {
      w.atGate = true;
      return false;
    }
    for (let tries = 0; tries < 100; tries++) {
      w.file ??= LockFile.open(w.req.target.path, w.req.target.groupShared, w.req.target.name);
      if (!w.file.tryLock(w.req.mode)) return false;
      if (w.file.stillAtPath()) {
        this.grant(w);
        return true;
      }
      // We locked an inode that was unlinked or replaced meanwhile: start over on the new file.
      this.dropFile(w);
    }
    throw new HostlockError(ErrorCode.IoError, `lock file ${w.req.target.path} keeps being replaced; giving up`, {
      path: w.req.target.path,
    });
  }

  private grant(w: Waiter): void {
    const { req } = w;
    const owner = req.owner ?? {};
    const hold: Hold = {
      target: req.target,
      mode: req.mode,
      file: w.file!,
      since: new Date(),
      owner,
      prefix: req.prefix ?? '',
      lost: false,
    };
    w.file = undefined;
    this.dropGate(w); // the writer is in: let readers queue on the lock itself again
    hold.record = req.target.registry.add(hold.file.inodeKey, req.target.path, req.target.name, {
      ...owner,
      pid: owner.pid ?? process.pid,
      user: owner.user ?? currentUser(),
      controller: controllerName(),
      mode: req.mode,
      since: hold.since.toISOString(),
    });
    w.entry.holds.add(hold);
    this.holderCache.delete(req.target.path);
    log.info('Acquired', { prefix: hold.prefix, path: req.target.path, mode: req.mode });
    w.settle({ acquired: true, hold, waited: seconds(w.started), holders: [] });
  }

  // Grants queued waiters in order while they fit; the head that meets a
  // holder outside this process waits in the kernel.
  private pump(entry: PathEntry): void {
    while (entry.queue.length > 0) {
      const head = entry.queue[0];
      if (head.kernel || !this.compatible(entry, head.req.mode)) return;
      try {
        if (this.attempt(head)) {
          entry.queue.shift();
          continue;
        }
      } catch (err) {
        entry.queue.shift();
        this.dropFile(head);
        this.dropGate(head);
        head.fail(err);
        continue;
      }
      this.waitInKernel(head);
      return;
    }
    this.forget(entry);
  }

  private waitInKernel(w: Waiter): void {
    if (w.atGate) return this.waitAtGate(w);
    if (w.req.mode === 'exclusive' && !w.gate && this.closeGate(w)) return;
    const wait = kernelWait(w.file!, w.req.mode);
    w.kernel = wait;
    void wait.done.then((got) => {
      if (w.settled || w.kernel !== wait) return;
      w.kernel = undefined;
      if (got && w.file!.stillAtPath()) {
        w.entry.queue.splice(w.entry.queue.indexOf(w), 1);
        this.grant(w);
      } else {
        this.dropFile(w); // locked a deleted inode, or the waiter child failed: try afresh
      }
      this.pump(w.entry);
    });
  }

  // A reader blocked by a waiting writer: wait until the turnstile lets readers
  // through, then go for the lock without looking at the turnstile again.
  private waitAtGate(w: Waiter): void {
    const gate = openTurnstile(w.req.target.path, w.req.target.groupShared);
    w.atGate = false;
    w.passed = true;
    if (!gate) return this.pump(w.entry);
    const wait = kernelWait(gate, 'shared');
    w.kernel = wait;
    void wait.done.then(() => {
      gate.close();
      if (w.settled || w.kernel !== wait) return;
      w.kernel = undefined;
      this.pump(w.entry);
    });
  }

  // A writer about to wait for the lock first takes the turnstile, so that no
  // new reader of another process gets in meanwhile. True when it must wait
  // for the turnstile itself (another writer holds it); `pump` resumes it.
  private closeGate(w: Waiter): boolean {
    const gate = openTurnstile(w.req.target.path, w.req.target.groupShared);
    if (!gate) return false;
    try {
      if (gate.tryLock('exclusive')) {
        w.gate = gate;
        return false;
      }
    } catch {
      gate.close();
      return false;
    }
    const wait = kernelWait(gate, 'exclusive');
    w.kernel = wait;
    void wait.done.then((got) => {
      if (w.settled || w.kernel !== wait) {
        gate.close();
        return;
      }
      w.kernel = undefined;
      if (got) w.gate = gate;
      else gate.close();
      this.pump(w.entry);
    });
    return true;
  }

  private giveUp(w: Waiter, reason: 'timeout' | 'cancelled'): void {
    if (!w || w.settled || w.givingUp) return;
    const i = w.entry.queue.indexOf(w);
    if (i >= 0) w.entry.queue.splice(i, 1);
    const kernel = w.kernel;
    w.kernel = undefined;
    kernel?.cancel();
    this.dropFile(w); // closing our descriptor undoes any lock the killed child may have just taken...
    this.dropGate(w);
    const finish = () => {
      w.settle({ acquired: false, waited: seconds(w.started), reason, holders: this.holders(w.req.target) });
      this.pump(w.entry);
    };
    if (!kernel) return finish();
    // ...once the child is gone too: it shares our open file description, and
    // one that took the lock just before the kill holds it until it exits.
    // Only then is "timeout" true.
    w.givingUp = true;
    kernel.done.then(finish, finish);
  }

  private dropFile(w: Waiter): void {
    w.file?.close();
    w.file = undefined;
  }

  private dropGate(w: Waiter): void {
    w.gate?.close();
    w.gate = undefined;
  }

  private checkLost(): void {
    for (const e of this.entries.values()) {
      for (const h of e.holds) {
        if (h.lost || h.file.stillAtPath()) continue;
        h.lost = true;
        h.target.registry.update(h.record, { lost: true });
        log.warn(`lock file ${h.target.path} was deleted or replaced while held: others may now hold it too`, {
          prefix: h.prefix,
          path: h.target.path,
        });
      }
    }
  }

  // Releases everything this manager holds and abandons every wait.
  shutdown(): void {
    for (const e of [...this.entries.values()]) {
      for (const w of [...e.queue]) this.giveUp(w, 'cancelled');
      for (const h of [...e.holds]) this.release(h);
    }
    clearInterval(this.lostTimer);
  }
}
