// The journal of critical sections that stress clients append to while they
// hold a lock (see fixtures/stress-worker.ts), and its replay.
//
// The format is molecule/shared/journal.py's: one JSON object per line,
// `ev` enter | exit | abort, `id` pairing them, `pid`, `run`, `lock_name`,
// `mode` (exclusive | shared), `t` (CLOCK_MONOTONIC ns) and `wall` (wall-clock
// ns). Stress sections add `value`, the counter they read (enter) or wrote
// (exit), and the kill point of an abort. The overlap rule is journal.py's
// too: two sections under one lock must not be inside together unless both
// are shared. It is ported rather than called because the replay also checks
// the counter (lost updates) and kill latencies, line by line, and runs in
// every TypeScript stress test; test/fixtures/journals/*.jsonl are samples
// that this replay and journal.py's `exclusive` check (test_journal.py) must
// both accept (good-*) or reject (bad-*).
//
// Every writer appends while holding the lock, one O_APPEND write per line,
// so line order is event order; the replay follows it. `wall` is the clock
// every writer has (bash's flock(1) worker has no monotonic one), so kill
// latencies are measured with it.
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';

export interface JournalEvent {
  ev: string; // enter | exit | abort for sections; other kinds (note, run-start...) are molecule's
  id: string;
  pid: number;
  run?: string;
  lock_name?: string | null;
  mode?: 'exclusive' | 'shared';
  t?: number;
  wall: number;
  value?: number;
  point?: string;
  [field: string]: unknown;
}

// Appends one event: the fields that stamp it, then the caller's.
export function journalAppend(journal: string, event: Omit<JournalEvent, 'wall'>): void {
  const stamp = {
    t: Number(process.hrtime.bigint()),
    wall: Math.round((performance.timeOrigin + performance.now()) * 1e6),
  };
  appendFileSync(journal, JSON.stringify({ ...stamp, ...event }) + '\n');
}

// A stress section under lock "ctr": `id` must be the same for its enter and its exit or abort.
export function stressEvent(
  ev: 'enter' | 'exit' | 'abort',
  id: string,
  fields: { mode?: 'exclusive' | 'shared'; value?: number; point?: string; [field: string]: unknown },
): Omit<JournalEvent, 'wall'> {
  return { ev, id, pid: process.pid, run: String(process.pid), lock_name: 'ctr', mode: 'exclusive', ...fields };
}

export function parseJournal(text: string): JournalEvent[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line, i) => {
      try {
        return JSON.parse(line) as JournalEvent;
      } catch {
        return assert.fail(`journal line ${i + 1} is not JSON: ${line}`);
      }
    });
}

interface Verdict {
  completed: number;
  readSections: number;
  sections: number;
  kills: number;
  killLatenciesMs: number[];
}

// Replays the journal: no two sections inside one lock at once unless both
// are shared, and (where sections carry the counter's `value`) every read
// sees the last write and a shared section sees no change.
export function checkJournal(text: string, finalCounter: number): Verdict {
  // lock name -> id -> section inside it now
  const inside = new Map<string, Map<string, JournalEvent>>();
  let readSections = 0;
  let value = 0;
  let completed = 0;
  let sections = 0;
  let kills = 0;
  const seen = new Set<number>();
  const latencies: number[] = [];
  let pendingKill: { pid: number; wall: number; known: Set<number> } | null = null;
  for (const [i, e] of parseJournal(text).entries()) {
    const where = `journal line ${i + 1} ${JSON.stringify(e)}`;
    if (pendingKill && e.pid !== pendingKill.pid) {
      // The first sign of the next holder. Only a process that was already
      // running (so already waiting) measures the release, not a respawn's start-up.
      if (pendingKill.known.has(e.pid)) latencies.push((e.wall - pendingKill.wall) / 1e6);
      pendingKill = null;
    }
    const lock = String(e.lock_name ?? '');
    const here = inside.get(lock) ?? new Map<string, JournalEvent>();
    inside.set(lock, here);
    const shared = e.mode === 'shared';
    const others = [...here.values()];
    if (e.ev === 'enter') {
      if (e.lock_name) {
        const bad = others.filter((o) => !(shared && o.mode === 'shared'));
        const who = bad.map((o) => `${o.mode === 'shared' ? 'reader' : 'writer'} ${o.pid}`).join(', ');
        assert.equal(bad.length, 0, `${where}: ${e.pid} entered ${e.mode} while ${who} inside`);
      }
      if (e.value !== undefined)
        assert.equal(
          e.value,
          value,
          `${where}: read ${e.value} but the last write was ${value}${shared ? '' : ' (lost update)'}`,
        );
      here.set(e.id, e);
      if (shared) readSections++;
      else sections++;
    } else if (e.ev === 'exit') {
      const entered = here.get(e.id);
      assert.ok(entered, `${where}: ended a section it was not in`);
      if (e.value !== undefined) {
        if (shared) assert.equal(e.value, value, `${where}: the value changed under a reader`);
        else {
          assert.equal(e.value, value + 1, where);
          value++;
          completed++;
        }
      }
      here.delete(e.id);
    } else if (e.ev === 'abort') {
      // A process about to SIGKILL itself: before its read, after it, or after its write.
      const entered = here.get(e.id);
      assert.ok(
        !others.some((o) => o.id !== e.id && o.mode !== 'shared'),
        `${where}: killed while another writer was inside`,
      );
      if (e.point === 'after-write') {
        value++;
        completed++;
      }
      if (entered) here.delete(e.id);
      kills++;
      pendingKill = { pid: e.pid, wall: e.wall, known: new Set(seen) };
    } else {
      assert.fail(`${where}: unknown event`);
    }
    seen.add(e.pid);
  }
  assert.equal(finalCounter, value, 'the counter file disagrees with the journal');
  const left = [...inside.values()].flatMap((m) => [...m.values()]).map((o) => `${o.pid}`);
  assert.equal(left.length, 0, `sections ${left.join(', ')} never ended`);
  return { completed, readSections, sections, kills, killLatenciesMs: latencies };
}

// Fencing tokens in the journal (`token` on the enter events of hostlock
// clients): every grant's token is new, and a writer's is above every token
// granted before it entered; a reader's is above every writer's before it.
// Returns the largest token seen and how many carried one.
export function checkTokens(text: string): { max: number; count: number } {
  let max = 0;
  let lastWriter = 0;
  let count = 0;
  const seen = new Set<number>();
  for (const [i, e] of parseJournal(text).entries()) {
    if (e.ev !== 'enter' || e.token === undefined) continue;
    const token = Number(e.token);
    const where = `journal line ${i + 1} ${JSON.stringify(e)}`;
    const writer = e.mode !== 'shared';
    assert.ok(Number.isInteger(token) && token > 0, `${where}: no token`);
    assert.ok(!seen.has(token), `${where}: token ${token} granted twice`);
    if (writer) assert.ok(token > max, `${where}: writer's token ${token} not above ${max}, granted before`);
    else assert.ok(token > lastWriter, `${where}: reader's token ${token} not above the last writer's ${lastWriter}`);
    if (writer) lastWriter = token;
    seen.add(token);
    max = Math.max(max, token);
    count++;
  }
  return { max, count };
}

// The sections of a counting semaphore (enter and exit events carrying the
// `slot` they hold): never more than `slots` inside, never two in one slot.
// Returns the most that were inside at once and the sections seen.
export function checkSlotJournal(text: string, slots: number): { most: number; sections: number } {
  const inside = new Map<number, JournalEvent>(); // slot -> its holder's enter
  const holders = new Set<string>();
  let most = 0;
  let sections = 0;
  for (const [i, e] of parseJournal(text).entries()) {
    const where = `journal line ${i + 1} ${JSON.stringify(e)}`;
    const slot = Number(e.slot);
    if (e.ev === 'enter') {
      // Counted by section first, whatever slot each one says it has.
      holders.add(e.id);
      assert.ok(holders.size <= slots, `${where}: ${holders.size} inside, more than ${slots} slots`);
      assert.ok(slot >= 1 && slot <= slots, `${where}: slot out of range`);
      assert.ok(!inside.has(slot), `${where}: slot ${slot} already held by ${inside.get(slot)?.pid}`);
      inside.set(slot, e);
      sections++;
      most = Math.max(most, holders.size);
    } else if (e.ev === 'exit') {
      assert.equal(inside.get(slot)?.id, e.id, `${where}: left a slot it was not in`);
      inside.delete(slot);
      holders.delete(e.id);
    } else {
      assert.fail(`${where}: unknown event`);
    }
  }
  assert.equal(inside.size, 0, `sections never ended: ${[...inside.values()].map((e) => e.pid).join(', ')}`);
  return { most, sections };
}
