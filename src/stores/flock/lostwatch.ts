// A person deleting a held lock file breaks exclusion for newcomers; the
// holder cannot prevent it but must say so. Every 2 s while this process holds
// anything, each hold's file is checked against its path; a hold found lost is
// marked in its record and the history, and its owner is told once.
//
// The interval is started on the turn of the event loop after the first grant,
// not within it: a process's first timer costs a quarter of a millisecond,
// and by then `hostlock run` has started its command, which runs meanwhile.
import type { HistoryEvent } from '../../store/types';
import { log } from '../../core/log';
import type { FlockHold } from './hold';

const EVERY_MS = 2000;

export class LostWatch {
  private readonly holds = new Set<FlockHold>();
  private timer: NodeJS.Timeout | undefined;
  private starting: NodeJS.Immediate | undefined;

  constructor(private readonly record: (e: HistoryEvent) => void) {}

  add(h: FlockHold): void {
    this.holds.add(h);
    if (this.timer || this.starting) return;
    this.starting = setImmediate(() => {
      this.starting = undefined;
      this.timer = setInterval(() => this.check(), EVERY_MS);
      this.timer.unref();
    });
    this.starting.unref();
  }

  delete(h: FlockHold): void {
    this.holds.delete(h);
    if (this.holds.size > 0) return;
    clearImmediate(this.starting);
    clearInterval(this.timer);
    this.starting = undefined;
    this.timer = undefined;
  }

  // A hold of this process on `path` has been found lost.
  lostHere(path: string): boolean {
    for (const h of this.holds) if (h.place.path === path && h.lost) return true;
    return false;
  }

  all(): FlockHold[] {
    return [...this.holds];
  }

  private check(): void {
    for (const h of this.holds) {
      if (h.lost || h.file.stillAtPath()) continue;
      h.lost = true;
      h.place.registry.update(h.record, { lost: true });
      const why = `lock file ${h.place.path} was deleted or replaced while held: others may now hold it too`;
      log.warn(why, { path: h.place.path });
      this.record({ event: 'lost', key: h.key, mode: h.mode, who: h.requester, token: h.token, reason: why });
      h.onLost?.(why);
    }
  }
}
