// What the local store reports: a key's holders and waiters (`status`) and
// every lock of a lock directory (`list`), from the holder and waiter records
// checked against the kernel's lock table.
import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Holder, LockKey } from '../../store/types';
import type { KeyStatus, Waiter } from '../../store/contract';
import { isStopped, kernelInodeKey, readKernelLocks } from '../../sys/proc';
import { holdersOf, lostHoldersOf, type StoredRecord } from './holders';
import { decodeLockName, lockNameOf, LOCK_SUFFIX } from './names';
import { groupShared, lockDir, type Place, registryOf } from './place';
import { slotHoldersOf } from './slots';

export interface FlockStatus extends KeyStatus {
  exists: boolean;
  lost: boolean;
}

// `held` and `mode` describe the file now at the path; `holders` also lists
// holds lost to a deletion or replacement (`lost: true`), whoever holds them.
// `lostHere`: a hold of this process on the path was found lost.
export function statusOf(key: LockKey, place: Place, lostHere: boolean): FlockStatus {
  const st = statSync(place.path, { bigint: true, throwIfNoEntry: false });
  const inode = st ? kernelInodeKey(st.dev, st.ino) : null;
  const kernel = readKernelLocks();
  const current = inode ? holdersOf(place.registry, inode, kernel) : [];
  const records = place.registry.readPath(place.path);
  const lostHolders = lostHoldersOf(records, place.path, inode, kernel);
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
    lost: lostHolders.length > 0 || lostHere,
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
export function listDir(dir?: string): Array<KeyStatus & { name: string; path: string }> {
  const d = lockDir(dir);
  const registry = registryOf(join(d, '.holders'), groupShared(d));
  const kernel = readKernelLocks();
  const all = registry.readAll();
  const waiting = registryOf(join(d, '.waiters'), groupShared(d)).readAll();
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
    const holders = [...(inode ? holdersOf(registry, inode, kernel) : []), ...lostHoldersOf(all, path, inode, kernel)];
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
