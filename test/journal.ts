// The independent journal of critical sections that stress clients append to
// while they hold a lock (see fixtures/stress-worker.ts), and its replay.
import assert from 'node:assert/strict';

interface Verdict {
  completed: number;
  readSections: number;
  sections: number;
  kills: number;
  killLatenciesMs: number[];
}

// Replays the journal: one writer at a time and no reader beside it, every
// read sees the last write. Shared sections are `R <pid> <time> <value>` at
// the start and `r <pid> <time> <value>` at the end (read again: unchanged).
export function checkJournal(text: string, finalCounter: number): Verdict {
  let inside: string | null = null;
  const readers = new Set<string>();
  let readSections = 0;
  let value = 0;
  let completed = 0;
  let sections = 0;
  let kills = 0;
  const seen = new Set<string>();
  const latencies: number[] = [];
  let pendingKill: { pid: string; ts: number; known: Set<string> } | null = null;
  const lines = text.split('\n').filter(Boolean);
  for (const [i, line] of lines.entries()) {
    const [kind, pid, ts, arg] = line.split(' ');
    const where = `journal line ${i + 1} "${line}"`;
    if (pendingKill && pid !== pendingKill.pid) {
      // The first sign of the next holder. Only a process that was already
      // running (so already waiting) measures the release, not a respawn's start-up.
      if (pendingKill.known.has(pid)) latencies.push((Number(ts) - pendingKill.ts) * 1000);
      pendingKill = null;
    }
    if (kind === 'B') {
      assert.equal(inside, null, `${where}: ${pid} entered while ${inside} was inside`);
      assert.equal(readers.size, 0, `${where}: ${pid} entered while readers ${[...readers].join(', ')} were inside`);
      assert.equal(Number(arg), value, `${where}: read ${arg} but the last write was ${value} (lost update)`);
      inside = pid;
      sections++;
    } else if (kind === 'R') {
      assert.equal(inside, null, `${where}: reader ${pid} entered while writer ${inside} was inside`);
      assert.equal(Number(arg), value, `${where}: read ${arg} but the last write was ${value}`);
      readers.add(pid);
      readSections++;
    } else if (kind === 'r') {
      assert.ok(readers.has(pid), `${where}: ended a shared section it was not in`);
      assert.equal(Number(arg), value, `${where}: the value changed under a reader`);
      readers.delete(pid);
    } else if (kind === 'E') {
      assert.equal(inside, pid, `${where}: ended a section it was not in`);
      assert.equal(Number(arg), value + 1, `${where}`);
      value++;
      completed++;
      inside = null;
    } else if (kind === 'K') {
      assert.ok(inside === null || inside === pid, `${where}: killed while ${inside} was inside`);
      readers.delete(pid);
      if (arg === 'after-write') {
        value++;
        completed++;
      }
      kills++;
      inside = null;
      pendingKill = { pid, ts: Number(ts), known: new Set(seen) };
    } else {
      assert.fail(`${where}: unknown record`);
    }
    seen.add(pid);
  }
  assert.equal(finalCounter, value, 'the counter file disagrees with the journal');
  assert.equal(readers.size, 0, `readers ${[...readers].join(', ')} never ended`);
  return { completed, readSections, sections, kills, killLatenciesMs: latencies };
}

// Fencing tokens in the journal (the fifth field of hostlock's B and R lines):
// every grant's token is new, and a writer's is above every token granted
// before it entered; a reader's is above every writer's before it. Returns the
// largest token seen.
export function checkTokens(text: string): { max: number; count: number } {
  let max = 0;
  let lastWriter = 0;
  let count = 0;
  const seen = new Set<number>();
  for (const [i, line] of text.split('\n').filter(Boolean).entries()) {
    const [kind, , , , tok] = line.split(' ');
    if ((kind !== 'B' && kind !== 'R') || tok === undefined) continue;
    const token = Number(tok);
    const where = `journal line ${i + 1} "${line}"`;
    assert.ok(Number.isInteger(token) && token > 0, `${where}: no token`);
    assert.ok(!seen.has(token), `${where}: token ${token} granted twice`);
    if (kind === 'B') assert.ok(token > max, `${where}: writer's token ${token} not above ${max}, granted before`);
    else assert.ok(token > lastWriter, `${where}: reader's token ${token} not above the last writer's ${lastWriter}`);
    if (kind === 'B') lastWriter = token;
    seen.add(token);
    max = Math.max(max, token);
    count++;
  }
  return { max, count };
}

// A journal of a counting semaphore's sections: `S <pid> <time> <slot>` when
// a holder enters, `s <pid> <time> <slot>` when it leaves (still holding).
// Never more than `slots` inside, never two in one slot; returns the most
// that were inside at once and the sections seen.
export function checkSlotJournal(text: string, slots: number): { most: number; sections: number } {
  const inside = new Map<string, string>(); // slot -> pid
  const holders = new Set<string>();
  let most = 0;
  let sections = 0;
  for (const [i, line] of text.split('\n').filter(Boolean).entries()) {
    const [kind, pid, , slot] = line.split(' ');
    const where = `journal line ${i + 1} "${line}"`;
    if (kind === 'S') {
      // Counted by process first, whatever slot each one says it has.
      holders.add(pid);
      assert.ok(holders.size <= slots, `${where}: ${holders.size} inside, more than ${slots} slots`);
      assert.ok(Number(slot) >= 1 && Number(slot) <= slots, `${where}: slot out of range`);
      assert.ok(!inside.has(slot), `${where}: slot ${slot} already held by ${inside.get(slot)}`);
      inside.set(slot, pid);
      sections++;
      most = Math.max(most, holders.size);
    } else if (kind === 's') {
      assert.equal(inside.get(slot), pid, `${where}: left a slot it was not in`);
      inside.delete(slot);
      holders.delete(pid);
    } else {
      assert.fail(`${where}: unknown record`);
    }
  }
  assert.equal(inside.size, 0, `sections never ended: ${[...inside.values()].join(', ')}`);
  return { most, sections };
}
