// The runs of a timeline: who each one is (as its history records say) and
// the one letter and colour it has in every drawing, given in the order the
// runs first appear in the history.
import type { HistoryRecord } from '../../../store/types';
import { byTime, runOf } from './model';
import { colourOf } from './palette';

export const GLYPHS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export interface Run {
  id: string;
  glyph: string; // one character: a terminal cell
  label: string; // the glyph, numbered once the glyphs are used up (A, …, 9, A2, …)
  colour: string; // #rrggbb
  first: number; // ms: its first record
  pid?: number;
  user?: string;
  controller?: string;
  playbook?: string;
  play?: string;
  tasks: string[];
  hosts: string[];
}

export function runsOf(records: HistoryRecord[]): Run[] {
  const runs = new Map<string, Run>();
  const add = (id: string, t: string, who: Partial<HistoryRecord>): Run => {
    let run = runs.get(id);
    if (!run) {
      const i = runs.size;
      const glyph = GLYPHS.charAt(i % GLYPHS.length);
      const cycle = Math.floor(i / GLYPHS.length);
      const label = cycle ? `${glyph}${cycle + 1}` : glyph;
      run = { id, glyph, label, colour: colourOf(i), first: Date.parse(t), tasks: [], hosts: [] };
      runs.set(id, run);
    }
    run.pid ??= who.pid;
    run.user ??= who.user;
    run.controller ??= who.controller;
    run.playbook ??= who.playbook;
    run.play ??= who.play;
    if (who.task && !run.tasks.includes(who.task)) run.tasks.push(who.task);
    if (who.host && !run.hosts.includes(who.host)) run.hosts.push(who.host);
    return run;
  };
  const sorted = byTime(records);
  for (const r of sorted) add(runOf(r), r.t, r);
  // A break names the holder it ended: that run may have no record of its own in range.
  for (const r of sorted) if (r.event === 'break' && r.victim) add(runOf(r.victim), r.t, r.victim);
  return [...runs.values()];
}

// Who a run is, field by field: playbook, task(s), user@controller, pid.
export function fields(run: Run, maxTasks = 2): { playbook: string; tasks: string; who: string; pid: string } {
  const tasks = run.tasks.slice(0, maxTasks).map((t) => `[${t}]`);
  if (run.tasks.length > maxTasks) tasks.push(`+${run.tasks.length - maxTasks}`);
  return {
    playbook: run.playbook ?? '',
    tasks: tasks.join(' '),
    who: run.user ? `${run.user}@${run.controller ?? '?'}` : (run.controller ?? ''),
    pid: run.pid !== undefined && run.id !== `pid ${run.pid}` ? `pid ${run.pid}` : '',
  };
}

// The same in one line.
export function identity(run: Run): string {
  const f = fields(run);
  return [f.playbook, f.tasks, f.who, f.pid].filter(Boolean).join('  ');
}
