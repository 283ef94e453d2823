// Deadlock detection among runs, from the holder and waiter records a store
// reports: run A waits for a lock that run B holds, B (transitively) waits for
// one that A holds. A party is a run's host (its tasks run one after another,
// so a host that waits cannot release what it holds); two hosts of one run
// under the `free` strategy go on independently, so a run as a whole is not
// one party. Only records that name their run take part; a holder without a
// record (flock(1), Python fcntl) or without a run is invisible.
import type { Holder, DeadlockLink } from '../store/types';
import type { KeyStatus } from '../store/contract';
import type { Mode } from '../core/mode';

export interface WaitingRun {
  run: string;
  keyId: string;
  mode: Mode;
  task?: string;
  host?: string;
  id?: string; // our waiter record's id, if written
}

interface Edge {
  to: string;
  link: DeadlockLink;
  order: string; // when the wait began: since, then record id
}

export interface Cycle {
  links: DeadlockLink[];
  // Our wait is the newest in the cycle: it closed it. Two runs that close a
  // cycle at the same moment see the same records, so only one of them is.
  closing: boolean;
}

function conflicts(wants: Mode, held: Mode): boolean {
  return wants === 'exclusive' || held === 'exclusive';
}

function label(s: KeyStatus): string {
  return s.key.name ?? s.key.id;
}

// The party that waits or holds: a run's host (or the run, without a host).
function party(x: { run?: string; host?: string }): string {
  return `${x.run}\0${x.host ?? ''}`;
}

// The wait-for edges between runs: a waiter points at each other run that
// holds its lock in a mode it cannot share.
function edges(statuses: KeyStatus[], me: WaitingRun): Map<string, Edge[]> {
  const out = new Map<string, Edge[]>();
  const add = (
    w: { run?: string; mode: Mode; task?: string; host?: string; since?: string; id?: string },
    s: KeyStatus,
    holders: Holder[],
  ) => {
    if (!w.run) return;
    const from = party(w);
    const order = w.since === undefined ? '\uffff' : `${w.since}\0${w.id ?? ''}`;
    for (const h of holders) {
      if (!h.run || party(h) === from || h.lost || !conflicts(w.mode, h.mode)) continue;
      let list = out.get(from);
      if (!list) out.set(from, (list = []));
      const to = party(h);
      if (list.some((e) => e.to === to && e.link.name === label(s))) continue;
      list.push({
        to,
        order,
        link: { run: w.run, task: w.task, host: w.host, name: label(s), heldBy: h.run, heldByHost: h.host },
      });
    }
  };
  let mine = false;
  for (const s of statuses) {
    for (const w of s.waiters) add(w, s, s.holders);
    if (s.key.id === me.keyId) {
      // Our own wait, whether or not its record made it to the store.
      const rec = s.waiters.find((w) => me.id !== undefined && w.id === me.id);
      add({ ...me, since: rec?.since, id: rec?.id }, s, s.holders);
      mine = true;
    }
  }
  if (!mine) return new Map();
  return out;
}

// The cycle that `me`'s wait closes, as links from `me` round to `me`; null if none.
export function findCycle(statuses: KeyStatus[], me: WaitingRun): Cycle | null {
  const graph = edges(statuses, me);
  const mine = statuses.find((s) => s.key.id === me.keyId);
  const self = party(me);
  const start = mine ? graph.get(self)?.filter((e) => e.link.name === label(mine)) : undefined;
  if (!start?.length) return null;
  // Breadth first, so that the shortest cycle is the one named.
  const seen = new Set<string>([self]);
  let frontier: Array<{ at: string; path: [Edge, ...Edge[]] }> = start.map((e) => ({ at: e.to, path: [e] }));
  while (frontier.length) {
    const next: typeof frontier = [];
    for (const { at, path } of frontier) {
      if (at === self) {
        const newest = path.reduce((a, e) => (e.order > a ? e.order : a), '');
        return { links: path.map((e) => e.link), closing: path[0].order >= newest };
      }
      if (seen.has(at)) continue;
      seen.add(at);
      for (const e of graph.get(at) ?? []) next.push({ at: e.to, path: [...path, e] });
    }
    frontier = next;
  }
  return null;
}

export function describeCycle(cycle: DeadlockLink[]): string {
  const parts = cycle.map((l) => {
    const what = [l.task ? `task '${l.task}'` : '', l.host ? `host ${l.host}` : ''].filter(Boolean).join(', ');
    const by = `run ${l.heldBy}${l.heldByHost ? ` (host ${l.heldByHost})` : ''}`;
    return `run ${l.run}${what ? ` (${what})` : ''} waits for '${l.name}' held by ${by}`;
  });
  return `deadlock: ${parts.join('; ')}`;
}
