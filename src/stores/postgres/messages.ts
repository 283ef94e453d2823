// What the store tells users about other runs: the deadlock a wait would
// close, a slot count that disagrees with the key's other users, who broke a
// hold, and the holders a break could have meant, each named by its owner.
import { ErrorCode, HostlockError } from '../../core/errors';
import { slotsMismatch } from '../../store/errors';
import type { Holder, LockKey, Requester } from '../../store/types';

// One run of a wait-for cycle, as the schema's enqueue reports it.
export interface CycleStep {
  run: number;
  waits_for: string;
  controller?: string;
  pid?: number;
  user?: string;
}

// The live row that asked other slots than this request (enqueue's `mismatch`).
export interface Mismatch {
  slots: number | null;
  granted: boolean;
  owner: Requester;
  controller: string | null;
}

const label = (key: LockKey) => key.name ?? key.id;

export function mismatchError(key: LockKey, asked: number | undefined, m: Mismatch): HostlockError {
  const owner = m.owner ?? {};
  return slotsMismatch(key, asked, {
    found: m.slots ?? undefined,
    by: { ...owner, controller: m.controller ?? owner.controller },
    held: m.granted,
  });
}

export function deadlockError(key: LockKey, cycle: CycleStep[], describe: string): HostlockError {
  const [mine, ...others] = cycle;
  if (!mine || others.length === 0) {
    return new HostlockError(
      ErrorCode.Deadlock,
      `deadlock: this run already holds or waits for "${label(key)}" and would wait for itself; nothing was queued`,
      { backend: describe, cycle },
    );
  }
  const who = (s: CycleStep) => `run ${s.run} (${s.controller ?? '?'} pid ${s.pid ?? '?'}, user ${s.user ?? '?'})`;
  const steps = others.map((s) => `${who(s)} waits for "${s.waits_for}"`);
  return new HostlockError(
    ErrorCode.Deadlock,
    `deadlock: waiting for "${label(key)}" would close a cycle: this run waits for "${mine.waits_for}", held or queued by ` +
      `${steps.join(', held or queued by ')}, held by this run; nothing was queued. ` +
      'Lock names in the same order in every play, or lock them in one task',
    { backend: describe, cycle },
  );
}

// Who ended a hold, from the notice break_hold sends its holder.
export function brokenBy(by: Partial<Requester> | undefined, reason: string): string {
  return `broken by ${by?.user ?? '?'}@${by?.controller ?? '?'} pid ${by?.pid ?? '?'}: ${reason}`;
}

// One holder as a break names it: its token and its owner.
export function holderLine(h: Holder): string {
  return `token ${h.token} (${h.user}@${h.controller} pid ${h.pid})`;
}

// A break whose token matches no hold of the key.
export function noSuchHold(key: LockKey, token: number, describe: string, holders: Holder[]): HostlockError {
  return new HostlockError(
    ErrorCode.InvalidParams,
    `no hold of '${label(key)}' on ${describe} has token ${token}: ` +
      (holders.length ? `it is held with ${holders.map(holderLine).join(', ')}` : 'it is not held') +
      '; `hostlock status --backend URL` lists the holders and their tokens',
    { token, holders },
  );
}
