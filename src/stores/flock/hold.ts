// One hold of the local store: a locked lock file (or slot file) and the
// holder record that names its owner.
import type { StoreHold } from '../../store/contract';
import type { LockKey, Requester } from '../../store/types';
import type { Mode } from '../../core/mode';
import type { LockFile } from './lockfile';
import type { Place } from './place';

export class FlockHold implements StoreHold {
  lost = false;
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
    readonly slot?: number,
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
