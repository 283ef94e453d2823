// Handles: what a client holds or waits for, by the name the helper gave it.
// A handle belongs to the connection that got it; its state moves
//   waiting → held | run | pending | (gone)     pending → waiting (block)
// A held handle whose hold the store lost stays held (a lock file's old inode
// still excludes whoever opened it) until its client, told at once, releases it.
// and every settled acquisition, of either scope, takes the one path below.
import { invalidParams } from '../core/errors';
import type { LockManager } from '../policy/manager';
import type { AcquireOutcome, AcquireRequest, Hold } from '../policy/requests';
import type { AcquireParams } from '../protocol/params';

export type HandleState =
  | { kind: 'held'; hold: Hold; lost?: string } // a connection's own lock; `lost`: why the store lost it
  | { kind: 'run'; path: string; member: string } // a member's share of a run hold
  | { kind: 'waiting'; cancel: () => void }
  | { kind: 'pending'; req: AcquireRequest; params: AcquireParams }; // a failed try, ready to block

// Helper-wide: which connection owns each handle, so that using another
// connection's handle gets a precise error.
export class HandleOwners {
  private next = 0;
  private readonly owners = new Map<string, HandleTable>();

  issue(table: HandleTable, prefix: string): string {
    const h = `${prefix}${++this.next}`;
    this.owners.set(h, table);
    return h;
  }

  forget(handle: string): void {
    this.owners.delete(handle);
  }

  known(handle: string): boolean {
    return this.owners.has(handle);
  }
}

export class HandleTable {
  private readonly states = new Map<string, HandleState>();
  private closed = false;

  constructor(
    private readonly owners: HandleOwners,
    private readonly manager: LockManager,
  ) {}

  issue(prefix: 'h' | 'r'): string {
    return this.owners.issue(this, prefix);
  }

  waiting(handle: string, cancel: () => void): void {
    this.states.set(handle, { kind: 'waiting', cancel });
  }

  // The handle's state once its acquisition has settled (`out` undefined: it failed).
  settled(
    handle: string,
    out: AcquireOutcome | undefined,
    req: AcquireRequest,
    params: AcquireParams,
    member?: string,
  ): void {
    if (!out || (!out.acquired && out.reason !== 'busy' && out.reason !== 'timeout')) return this.drop(handle);
    if (this.closed) {
      // The client left while waiting: a connection's lock goes with it; a run hold stays the run's.
      if (out.hold && member === undefined) this.manager.release(out.hold);
      return this.drop(handle);
    }
    if (out.acquired) {
      if (member !== undefined) this.states.set(handle, { kind: 'run', path: req.target.path, member });
      else if (out.hold) this.states.set(handle, { kind: 'held', hold: out.hold });
      return;
    }
    this.states.set(handle, { kind: 'pending', req: { ...req, onSettled: undefined }, params });
  }

  // The store lost the connection's hold: its release will say so.
  lost(handle: string, reason: string): boolean {
    const st = this.states.get(handle);
    if (st?.kind !== 'held' || st.lost !== undefined) return false;
    st.lost = reason;
    return true;
  }

  own(handle: string): HandleState {
    const st = this.states.get(handle);
    if (st) return st;
    if (this.owners.known(handle)) throw invalidParams(`handle ${handle} belongs to another connection`);
    throw invalidParams(`unknown handle ${handle}: it was never issued, or is already released`);
  }

  drop(handle: string): void {
    this.states.delete(handle);
    this.owners.forget(handle);
  }

  // The connection is gone: its own locks go with it, its waits are abandoned.
  // Run holds stay: they belong to the run, not to the worker that asked.
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [handle, st] of this.states) {
      if (st.kind === 'held') this.manager.release(st.hold);
      else if (st.kind === 'waiting') st.cancel();
      this.owners.forget(handle);
    }
    this.states.clear();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
