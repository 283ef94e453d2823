// Counting semaphores in the local store: slot i of a lock is the hidden file
// `.<lock file>.slot<i>`, locked exclusive; a hold takes whichever slot is
// free. A waiter waits in the kernel on every slot at once and keeps the first
// it gets. Every live holder and waiter of a slotted lock must ask for the
// same count, and nobody may hold it without slots.
import { statSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import type { Holder } from '../../store/types';
import { slotsMismatch } from '../../store/errors';
import { kernelInodeKey, readKernelLocks } from '../../sys/proc';
import type { StoredRecord } from './holders';
import { kernelWait, LockFile, type KernelWait } from './lockfile';
import { LOCK_SUFFIX } from './names';
import { besideLock, exists, made, type Place } from './place';
import { AbortError } from '../../store/errors';

export interface Slot {
  file: LockFile;
  slot: number; // 1-based
}

function slotPath(lockPath: string, i: number): string {
  return besideLock(lockPath, `slot${i}`);
}

// Present once a lock has been taken with slots: only then does a plain grant
// look for slot holders (one stat, not a read of the records, on every grant).
function slotsMarker(lockPath: string): string {
  return besideLock(lockPath, 'slots');
}

export function markSlotted(place: Place, n: number): void {
  LockFile.open(place.path, place.groupShared).close(); // so that status lists the name
  const f = LockFile.open(slotsMarker(place.path), place.groupShared);
  try {
    const text = Buffer.from(`${n}\n`);
    writeSync(f.fd, text, 0, text.length, 0);
  } finally {
    f.close();
  }
  made(slotsMarker(place.path));
}

// A free slot, locked, or null when all `n` are held.
export function trySlots(place: Place, n: number): Slot | null {
  const files: Array<LockFile | undefined> = [];
  try {
    for (let i = 1; i <= n; i++) {
      const f = LockFile.open(slotPath(place.path, i), place.groupShared);
      files.push(f);
      if (f.tryLock('exclusive') && f.stillAtPath()) {
        files[i - 1] = undefined;
        return { file: f, slot: i };
      }
    }
    return null;
  } finally {
    closeAll(files);
  }
}

// Waits in the kernel on every slot until one is held; rejects with an
// AbortError once `signal` aborts, with nothing held.
export async function waitSlots(place: Place, n: number, signal?: AbortSignal): Promise<Slot> {
  for (;;) {
    if (signal?.aborted) throw new AbortError();
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
        const file = files[first]!;
        files[first] = undefined;
        return { file, slot: first + 1 };
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      closeAll(files);
    }
  }
}

function closeAll(files: Array<LockFile | undefined>): void {
  for (const f of files) f?.close();
}

// Slot holders of a lock: live records of its path that hold a slot file.
export function slotHoldersOf(records: StoredRecord[], kernel: ReturnType<typeof readKernelLocks>): Holder[] {
  return records
    .filter((r) => r.slot !== undefined && (kernel === null || kernel.some((k) => k.inode === r.inode)))
    .map(({ name: _n, path: _p, inode: _i, helper_start: _s, ...h }) => h);
}

function keyOf(place: Place, name: string | undefined) {
  return { id: place.path, name: name ?? basename(place.path, LOCK_SUFFIX) };
}

// Every live holder and waiter of a slotted lock asks for the same count, and
// nobody holds it without slots.
export function checkSlots(place: Place, n: number): void {
  const kernel = readKernelLocks();
  const st = statSync(place.path, { bigint: true, throwIfNoEntry: false });
  const inode = st ? kernelInodeKey(st.dev, st.ino) : null;
  for (const r of place.registry.readPath(place.path)) {
    const live = kernel === null || kernel.some((k) => k.inode === r.inode);
    if (!live || r.lost) continue;
    if (r.slot === undefined && r.inode === inode)
      throw slotsMismatch(keyOf(place, r.name), n, { found: undefined, by: r });
    if (r.slot !== undefined && r.slots !== n) throw slotsMismatch(keyOf(place, r.name), n, { found: r.slots, by: r });
  }
  for (const w of place.waiters.readPath(place.path)) {
    if (w.slots !== n) throw slotsMismatch(keyOf(place, w.name), n, { found: w.slots, by: w, held: false });
  }
}

// A plain grant of a lock that slot holders hold is refused.
export function refuseIfSlotted(place: Place): void {
  if (!exists(slotsMarker(place.path))) return;
  const records = place.registry.readPath(place.path);
  const [held] = slotHoldersOf(records, readKernelLocks());
  if (held) throw slotsMismatch(keyOf(place, records[0]?.name), undefined, { found: held.slots, by: held });
}
