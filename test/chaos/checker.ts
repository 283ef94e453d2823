// The campaign's verdict: a pure function over what the clients journalled
// (test/journal.ts's format: enter/exit of each critical section with the
// token it was granted and whether the fenced resource accepted its writes,
// grant events, and each section's outcome as its client saw it), the
// resource's final state, hostlock's history and what was left once every
// client stopped. Violations are never expected; fenced overlaps (sections
// that met while the resource refused one of them) are what pauses and cuts
// make, and are counted apart.
import type { JournalEvent } from '../journal';

export type ViolationKind =
  | 'overlap' // two accepted exclusive sections of one name at once
  | 'slots' // more than N accepted sections in an N-slot name
  | 'reader-writer' // an accepted writer beside an accepted reader
  | 'token-order' // an accepted write with a token lower than one accepted before
  | 'lost-untold' // the client reported success for a hold the store recorded lost
  | 'recovery' // a waiter that did not get a name, nor saw anyone get it, within the bound after a fault healed
  | 'progress' // requests made and none granted in the whole run
  | 'leftover' // something held, queued or running once every client stopped
  | 'history-missing' // a grant or release the journal shows and the history lacks, away from any fault
  | 'resource'; // the resource's state disagrees with the accepted writes

export interface Violation {
  kind: ViolationKind;
  detail: string;
}

// One record of hostlock's history (`hostlock history --json`), reduced.
export interface HistoryRecord {
  event: string;
  name: string;
  token?: number;
}

export interface Fault {
  kind: string;
  start: number; // monotonic ns
  end: number;
}

export interface CheckInput {
  journal: JournalEvent[];
  // Highest token the resource accepted per key (a name, or name#slot).
  resource: Map<string, number>;
  history: HistoryRecord[];
  faults: Fault[];
  // Holds, waiters and processes found once every client had stopped.
  leftovers: string[];
  // Slot count of each slot name.
  slots: Map<string, number>;
  // The longest a name may go ungranted after a fault's end (ms).
  recoveryBoundMs: number;
  // Monotonic ns at which the clients stopped starting sections.
  stoppedAt: number;
}

export interface Section {
  id: string;
  name: string;
  key: string;
  mode: 'exclusive' | 'shared' | 'slot';
  token: number;
  client: string;
  enter: number;
  // Infinity while the journal has no end of it: a section whose process was
  // killed inside ends, at the latest, when its client saw the kill (`done`).
  exit: number;
  accepted: boolean; // both of its writes accepted
  outcome?: string; // released | lost | error | killed, as the client saw it
}

export interface Verdict {
  violations: Violation[];
  sections: number;
  accepted: number;
  refused: number; // sections the resource refused
  fencedOverlaps: number; // pairs of overlapping sections of which the resource refused one
  historyGaps: number; // history records missing from a fault's window (history is best effort)
  // The longest a waiter went on waiting after a fault's end for its name's next grant (ms), and the name.
  worstRecoveryMs: number;
  worstRecoveryName: string;
}

function sectionsOf(journal: JournalEvent[]): Section[] {
  const byId = new Map<string, Section>();
  const doneAt = new Map<string, number>();
  for (const e of journal) {
    if (e.ev === 'enter') {
      byId.set(e.id, {
        id: e.id,
        name: String(e.lock_name),
        key: typeof e.key === 'string' ? e.key : String(e.lock_name),
        mode: e.slot !== undefined ? 'slot' : (e.mode ?? 'exclusive'),
        token: Number(e.token),
        client: typeof e.client === 'string' ? e.client : String(e.pid),
        enter: Number(e.t),
        exit: Infinity,
        accepted: e.accepted === true,
      });
    } else if (e.ev === 'exit') {
      const s = byId.get(e.id);
      if (!s) continue;
      s.exit = Number(e.t);
      s.accepted = s.accepted && e.accepted === true;
    } else if (e.ev === 'done') {
      const s = byId.get(e.id);
      if (!s) continue;
      s.outcome = String(e.outcome);
      doneAt.set(e.id, Number(e.t));
    }
  }
  for (const [id, t] of doneAt) {
    const s = byId.get(id)!;
    if (s.exit === Infinity) s.exit = t;
  }
  return [...byId.values()];
}

// Each request for a lock (`ask`) from when it was made until it was granted,
// given up or its client gone (`giveup`, `done`), or the clients stopped.
interface Wait {
  name: string;
  ask: number;
  close: number;
}

function waitsOf(journal: JournalEvent[], stoppedAt: number): Wait[] {
  const byId = new Map<string, Wait>();
  for (const e of journal) {
    if (e.ev === 'ask') byId.set(e.id, { name: String(e.lock_name), ask: Number(e.t), close: Infinity });
    else if (e.ev === 'grant' || e.ev === 'giveup' || e.ev === 'done') {
      const w = byId.get(e.id);
      if (w && w.close === Infinity) w.close = Number(e.t);
    }
  }
  for (const w of byId.values()) if (w.close === Infinity) w.close = Math.max(stoppedAt, w.ask);
  return [...byId.values()];
}

const overlaps = (a: Section, b: Section) => a.enter < b.exit && b.enter < a.exit;
const ms = (ns: number) => ns / 1e6;

export function check(input: CheckInput): Verdict {
  const violations: Violation[] = [];
  const add = (kind: ViolationKind, detail: string) => violations.push({ kind, detail });
  const sections = sectionsOf(input.journal);
  const byName = new Map<string, Section[]>();
  for (const s of sections) byName.set(s.name, [...(byName.get(s.name) ?? []), s]);
  let fencedOverlaps = 0;

  for (const [name, list] of byName) {
    list.sort((a, b) => a.enter - b.enter);
    const n = input.slots.get(name);
    for (let i = 0; i < list.length; i++) {
      const a = list[i]!;
      for (let j = i + 1; j < list.length && list[j]!.enter < a.exit; j++) {
        const b = list[j]!;
        if (!overlaps(a, b)) continue;
        if (!a.accepted || !b.accepted) {
          if (n === undefined && (a.mode === 'exclusive' || b.mode === 'exclusive')) fencedOverlaps++;
          continue;
        }
        const who = `${a.client} (token ${a.token}) and ${b.client} (token ${b.token}) inside ${name} at once`;
        if (n !== undefined) continue;
        if (a.mode === 'exclusive' && b.mode === 'exclusive') add('overlap', who);
        else if (a.mode !== b.mode) add('reader-writer', who);
      }
      // The accepted sections inside at a's entry: a and every earlier one still inside.
      if (n !== undefined) {
        const at = list.filter((o) => o.accepted && o.enter <= a.enter && o.exit > a.enter).length;
        if (a.accepted && at > n)
          add('slots', `${at} accepted sections inside ${n}-slot ${name} as token ${a.token} entered`);
      }
    }
  }

  // Accepted writes per resource key, in the order they were made: tokens only increase.
  const byKey = new Map<string, Section[]>();
  for (const s of sections) if (s.accepted) byKey.set(s.key, [...(byKey.get(s.key) ?? []), s]);
  for (const [key, list] of byKey) {
    list.sort((a, b) => a.enter - b.enter);
    let top = 0;
    let writer = 0;
    for (const s of list) {
      const floor = s.mode === 'shared' ? writer : top;
      if (s.token <= floor)
        add('token-order', `${s.client} wrote ${key} with token ${s.token} after ${floor} was accepted`);
      top = Math.max(top, s.token);
      if (s.mode !== 'shared') writer = Math.max(writer, s.token);
    }
    const held = input.resource.get(key);
    if (held !== undefined && held < top)
      add('resource', `the resource holds token ${held} for ${key}, below the accepted ${top}`);
  }

  // Every section's grant is in the history, and so is how it ended.
  const hist = new Map<string, Set<string>>(); // name#token -> events
  for (const r of input.history) {
    if (r.token === undefined) continue;
    const k = `${r.name}#${r.token}`;
    hist.set(k, (hist.get(k) ?? new Set()).add(r.event));
  }
  // History is written best effort: a full disk, a killed writer or a server
  // that cannot take it within the history's retries loses records. A record
  // missing from such a window is a gap; missing from a quiet time, a violation.
  // The window opens a bound before the fault: a killed writer loses what it
  // had not yet written, and closes a bound after it, for the writes' retries.
  const graceNs = input.recoveryBoundMs * 1e6;
  const duringFault = (t: number) => input.faults.some((f) => t >= f.start - graceNs && t <= f.end + graceNs);
  let historyGaps = 0;
  const missing = (t: number, detail: string) => {
    if (duringFault(t)) historyGaps++;
    else add('history-missing', detail);
  };
  for (const s of sections) {
    const events = hist.get(`${s.name}#${s.token}`) ?? new Set<string>();
    if (!events.has('grant')) missing(s.enter, `no grant of ${s.name} token ${s.token} (${s.client})`);
    if (s.outcome === 'released' && !events.has('release') && !events.has('lost'))
      missing(s.exit, `no release of ${s.name} token ${s.token} (${s.client})`);
    if (s.outcome === 'released' && events.has('lost'))
      add('lost-untold', `${s.client} was told ${s.name} token ${s.token} was released; the store recorded it lost`);
  }

  // After each fault's end, a waiter of a name gets it, or sees somebody get
  // it, within the bound: from the fault's end (or the first request after
  // it) to the name's next grant, as long as somebody kept waiting. Measured
  // up to the next fault's start; a recovery that the next fault interrupts
  // is judged after that one.
  const grants = input.journal
    .filter((e) => e.ev === 'grant')
    .map((e) => ({ name: String(e.lock_name), t: Number(e.t) }))
    .sort((a, b) => a.t - b.t);
  const waits = waitsOf(input.journal, input.stoppedAt);
  const faults = [...input.faults].sort((a, b) => a.start - b.start);
  const boundNs = input.recoveryBoundMs * 1e6;
  const waitsByName = new Map<string, Wait[]>([...byName.keys()].map((n) => [n, []]));
  for (const w of waits) {
    const list = waitsByName.get(w.name);
    if (list) list.push(w);
    else waitsByName.set(w.name, [w]);
  }
  let worstNs = 0;
  let worstName = '';
  for (const [i, f] of faults.entries()) {
    const limit = Math.min(faults[i + 1]?.start ?? Infinity, input.stoppedAt);
    for (const [name, ofName] of waitsByName) {
      const open = ofName.filter((w) => w.close > f.end && w.ask < limit);
      if (!open.length) continue;
      const t0 = Math.max(f.end, Math.min(...open.map((w) => w.ask)));
      const next = grants.find((g) => g.name === name && g.t >= t0);
      const end = Math.min(next?.t ?? Infinity, limit);
      // The longest anyone waiting at t0 went on waiting, until the name's next grant.
      const stuck = Math.max(0, ...open.filter((w) => w.ask <= t0).map((w) => Math.min(w.close, end) - t0));
      if (stuck > worstNs) {
        worstNs = stuck;
        worstName = name;
      }
      if (stuck > boundNs)
        add(
          'recovery',
          `${name} not granted for ${(stuck / 1e9).toFixed(1)} s after ${f.kind} ended, with a waiter (bound ${(input.recoveryBoundMs / 1000).toFixed(1)} s)`,
        );
    }
  }

  if (waits.length && !grants.length) add('progress', `${waits.length} requests and not one grant`);
  for (const l of input.leftovers) add('leftover', l);
  const accepted = sections.filter((s) => s.accepted).length;
  return {
    violations,
    sections: sections.length,
    accepted,
    refused: sections.length - accepted,
    fencedOverlaps,
    historyGaps,
    worstRecoveryMs: ms(worstNs),
    worstRecoveryName: worstName,
  };
}
