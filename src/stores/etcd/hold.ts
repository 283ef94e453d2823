// A lock held through one etcd key. It is lost (once, with a reason) when
// the key or its lease goes under its holder; released, it deletes its key.
import type { Mode } from '../../core/mode';
import type { StoreHold } from '../../store/contract';
import type { LockKey } from '../../store/types';

export class EtcdHold implements StoreHold {
  lost = false;
  released = false;
  constructor(
    readonly key: LockKey,
    readonly mode: Mode,
    readonly token: number,
    readonly since: Date,
    readonly slot: number | undefined,
    readonly etcdKey: string,
    private readonly onLost: ((reason: string) => void) | undefined,
    private readonly drop: (h: EtcdHold) => Promise<void>,
  ) {}

  markLost(reason: string): void {
    if (this.lost || this.released) return;
    this.lost = true;
    this.onLost?.(reason);
  }

  release(): Promise<void> {
    if (this.released) return Promise.resolve();
    this.released = true;
    return this.drop(this);
  }
}
