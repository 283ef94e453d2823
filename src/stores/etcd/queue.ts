// The queue rules of one lock name, as pure functions of its keys.
//
// Every request for a name writes a key under `<prefix>locks/<name>/`; read
// in create-revision order, those keys are the name's queue. Who may hold
// follows the reader/writer rule of etcd's RWMutex recipe: a shared request
// waits for earlier exclusive keys only, an exclusive one for every earlier
// key; with slots, a request holds while fewer keys than the slot count are
// ahead of it. Every request, holder and reader (status, break) applies the
// same rule to the same snapshot, so they agree on who holds.
import type { Mode } from '../../core/mode';
import type { KeyStatus, Waiter } from '../../store/contract';
import type { SlotsUse } from '../../store/errors';
import type { Holder, LockKey, Requester } from '../../store/types';
import { unb64 } from './gateway';
import { isoTime } from '../../core/time';

// What a key's value says about its owner.
export interface KeyRecord {
  mode: Mode;
  held: boolean;
  since: string; // waiting since, then held since
  pid: number;
  user: string;
  controller: string;
  run?: string;
  playbook?: string;
  play?: string;
  task?: string;
  host?: string;
  // With slots: how many the lock has (every key of a name agrees), and,
  // once held, which one this key took.
  slots?: number;
  slot?: number;
  // Written by a break just before it deletes the key, so that the holder's
  // watch (which sees the value a deleted key had) can say who broke it.
  broken?: { by: string; reason: string };
  // The hold's token, kept by that mark (which changes the key's mod revision).
  token?: number;
  // Written by a try: its key goes at once unless it holds, so it is never a waiter.
  trying?: boolean;
}

// A key as etcd's gateway returns it.
export interface Kv {
  key: string; // base64, as etcd sends it
  create_revision: string;
  mod_revision: string;
  value?: string;
  lease?: string;
}

// A revision as a number (etcd sends int64s as strings).
export const rev = (s: string | undefined): number => Number(s ?? 0);

// The record a request writes into its key before it holds.
export function waitingRecord(requester: Requester, mode: Mode, slots: number | undefined): KeyRecord {
  return {
    mode,
    held: false,
    since: isoTime(),
    pid: requester.pid,
    user: requester.user,
    controller: requester.controller,
    run: requester.run,
    playbook: requester.playbook,
    play: requester.play,
    task: requester.task,
    host: requester.host,
    ...(slots !== undefined && { slots }),
  };
}

export function parseRecord(kv: { value?: string }): KeyRecord | null {
  try {
    return JSON.parse(unb64(kv.value)) as KeyRecord;
  } catch {
    return null;
  }
}

// The keys that `mine` waits behind: for an exclusive request every earlier
// key, for a shared one every earlier exclusive key; none: it may hold.
export function blockersOf(kvs: readonly Kv[], mine: Kv, mode: Mode): Set<string> {
  const out = new Set<string>();
  const r = rev(mine.create_revision);
  for (const kv of kvs) {
    if (rev(kv.create_revision) >= r) continue;
    // An unreadable record blocks like an exclusive one.
    if (mode === 'exclusive' || parseRecord(kv)?.mode !== 'shared') out.add(unb64(kv.key));
  }
  return out;
}

// Does this key hold, by the queue rule (its record's `held` mark, written
// after the grant, only dates the grant)?
export function holds(kvs: readonly Kv[], kv: Kv, r: KeyRecord): boolean {
  return blockersOf(kvs, kv, r.mode).size < (r.slots ?? 1);
}

// A waiter's id: its key's create revision, padded so that ids sort as numbers.
export function waitId(kv: Kv): string {
  return String(rev(kv.create_revision)).padStart(20, '0');
}

// A hold's fencing token: its key's create revision; with slots, the revision
// of the write that took its slot (the key's mod revision, kept in the value
// once a break marks it).
export function tokenOf(kv: Kv, r: KeyRecord | null): number {
  if (r?.token !== undefined) return r.token;
  return r?.slot !== undefined && r.held ? rev(kv.mod_revision) : rev(kv.create_revision);
}

// Who holds and who waits, in queue order.
export function statusOf(key: LockKey, kvs: readonly Kv[]): KeyStatus {
  const holders: Holder[] = [];
  const waiters: Waiter[] = [];
  for (const kv of kvs) {
    const r = parseRecord(kv);
    if (!r) continue;
    const who = {
      pid: r.pid,
      user: r.user,
      controller: r.controller,
      mode: r.mode,
      since: r.since,
      ...(r.run !== undefined && { run: r.run }),
      ...(r.playbook !== undefined && { playbook: r.playbook }),
      ...(r.play !== undefined && { play: r.play }),
      ...(r.task !== undefined && { task: r.task }),
      ...(r.host !== undefined && { host: r.host }),
      ...(r.slots !== undefined && { slots: r.slots }),
    };
    if (holds(kvs, kv, r)) {
      holders.push({
        ...who,
        token: tokenOf(kv, r),
        ...(r.slot !== undefined && r.held && { slot: r.slot }),
      });
    } else if (!r.trying) waiters.push({ ...who, id: waitId(kv) });
  }
  const slots = holders.find((h) => h.slots !== undefined)?.slots;
  return {
    key,
    held: holders.length > 0,
    mode: holders[0]?.mode ?? null,
    holders,
    waiters,
    ...(slots !== undefined && { slots }),
  };
}

// The first other key of the queue whose slot count differs from `slots`, as
// a slots-mismatch error needs it; null when every key agrees. Every key
// written before `mine` is in a snapshot that has `mine`: of two requests
// that disagree, the later one always sees the earlier.
export function slotsConflict(kvs: readonly Kv[], mine: Kv, slots: number | undefined): SlotsUse | null {
  for (const kv of kvs) {
    if (kv === mine) continue;
    const r = parseRecord(kv);
    if (!r || r.slots === slots) continue;
    return {
      found: r.slots,
      by: { pid: r.pid, controller: r.controller, run: r.run, task: r.task },
      held: holds(kvs, kv, r),
    };
  }
  return null;
}

// The lowest slot (1..) that none of `holders` but `mine` has written into its key.
export function freeSlot(holders: readonly Kv[], mine: Kv): number {
  const taken = new Set(holders.filter((kv) => kv !== mine).map((kv) => parseRecord(kv)?.slot));
  let slot = 1;
  while (taken.has(slot)) slot++;
  return slot;
}
