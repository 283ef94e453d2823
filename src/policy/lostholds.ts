// Holds a run lost without releasing them (its previous agent died, or the
// store lost them under it): each member of the run that held one hears of it
// once, on its next task, and that task fails "lock lost".
import type { Mode } from '../core/mode';

export interface LostHold {
  name?: string;
  path: string;
  mode: Mode;
  since: string;
  members: string[];
  // Why it was lost, as the store or the agent says it (no "lock lost" of its own).
  reason?: string;
}

// The reason of the holds a run's agent had when it died, as its successor tells them.
export const AGENT_STOPPED = "this run's hostlock agent died holding it";

export class LostHolds {
  private lost: LostHold[] = [];

  add(hold: LostHold): void {
    if (hold.members.length) this.lost.push(hold);
  }

  get size(): number {
    return this.lost.length;
  }

  // The lost holds a member held, which it now hears of (all of them, unheard, without a member).
  take(member?: string): LostHold[] {
    if (member === undefined) return this.lost;
    const mine = this.lost.filter((l) => l.members.includes(member));
    for (const l of mine) l.members = l.members.filter((m) => m !== member);
    this.lost = this.lost.filter((l) => l.members.length > 0);
    return mine;
  }
}
