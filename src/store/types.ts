// The shapes every store and the layers above it share: who holds or waits,
// and the events of a lock's history with the record each becomes.
import type { Mode } from '../core/mode';

// What a store locks. `id` is unique within the store (the local store uses
// the lock file's path; a server store its canonical key); `name` is the
// user's name when the lock was asked for by name.
export interface LockKey {
  id: string;
  name?: string;
}

export interface Owner {
  pid?: number;
  user?: string;
  run?: string;
  playbook?: string;
  play?: string;
  task?: string;
  host?: string;
}

export interface Holder extends Owner {
  pid: number;
  user: string;
  controller: string;
  mode: Mode;
  since: string;
  helper_pid?: number;
  members?: string[];
  lost?: boolean;
  foreign?: boolean;
  // The run's ansible-playbook is gone: the hold lasts only until the run's last process exits.
  run_ended?: boolean;
  stopped?: boolean; // its process is stopped (state T): it will not release by itself
  token?: number; // the hold's fencing token
  slot?: number; // with slots: which one it holds
  slots?: number; // with slots: how many the lock has
  id?: string; // waiter records only: the wait's id
  command?: string; // foreign holders: the process's command line
}

// Who asks: shown to others while holding or waiting.
export interface Requester extends Owner {
  pid: number;
  user: string;
  controller: string;
}

// One line of a lock's history (see history.ts for the journal that keeps it).
export type HistoryEventKind = 'wait' | 'grant' | 'release' | 'timeout' | 'cancel' | 'lost' | 'deadlock' | 'break';

export interface HistoryEvent {
  event: HistoryEventKind;
  key: LockKey;
  mode?: Mode;
  // Who holds, waits, or (break) who broke: the requester's metadata.
  who: Requester;
  token?: number; // grant, release, lost, break: the hold's fencing token
  wait?: string; // wait, grant, timeout, cancel, deadlock: the WaitTicket id
  waited?: number; // seconds
  reason?: string; // lost, deadlock, break: what the user reads
  cycle?: DeadlockLink[]; // deadlock
  victim?: Holder; // break: the holder that was ended
  at?: Date; // when it happened, if not now
}

// One edge of a wait-for cycle: `run` (its `host`) waits for `name`, held by
// run `heldBy` (its host `heldByHost`).
export interface DeadlockLink {
  run: string;
  task?: string;
  host?: string;
  name: string;
  heldBy: string;
  heldByHost?: string;
}

// One line of a lock's history, as every store keeps it.
export interface HistoryRecord {
  t: string; // ISO 8601
  event: HistoryEventKind;
  name?: string;
  path: string;
  mode?: Mode;
  token?: number;
  wait?: string;
  waited?: number;
  reason?: string;
  cycle?: DeadlockLink[];
  victim?: Partial<Holder>;
  pid?: number;
  helper_pid?: number;
  user?: string;
  controller?: string;
  run?: string;
  playbook?: string;
  play?: string;
  task?: string;
  host?: string;
}
