// The campaign's checker (test/chaos/checker.ts) on doctored journals: a clean
// one passes, and each kind of violation is caught and named.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { JournalEvent } from './journal';
import { check, type CheckInput, type HistoryRecord, type ViolationKind } from './chaos/checker';

const S = 1e9; // ns in a second

interface Sec {
  id: string;
  name: string;
  token: number;
  at: number; // seconds
  to: number;
  mode?: 'exclusive' | 'shared';
  slot?: number;
  accepted?: boolean;
  outcome?: string;
  ask?: number; // seconds: when its client asked for the lock (default 0)
}

function journal(sections: Sec[]): JournalEvent[] {
  return sections.flatMap((s) => {
    const base = {
      id: s.id,
      pid: 1,
      client: `c-${s.id}`,
      lock_name: s.name,
      mode: s.mode ?? 'exclusive',
      token: s.token,
      key: s.slot ? `${s.name}#${s.slot}` : s.name,
      ...(s.slot ? { slot: s.slot } : {}),
    };
    return [
      { ev: 'ask', ...base, t: (s.ask ?? 0) * S, wall: 0 },
      { ev: 'grant', ...base, t: s.at * S, wall: 0 },
      { ev: 'enter', ...base, t: s.at * S, wall: 0, accepted: true },
      { ev: 'exit', ...base, t: s.to * S, wall: 0, accepted: s.accepted ?? true },
      { ev: 'done', ...base, t: s.to * S, wall: 0, outcome: s.outcome ?? 'released' },
    ];
  });
}

function historyOf(sections: Sec[]): HistoryRecord[] {
  return sections.flatMap((s) => [
    { event: 'grant', name: s.name, token: s.token },
    { event: 'release', name: s.name, token: s.token },
  ]);
}

function input(sections: Sec[], more: Partial<CheckInput> = {}): CheckInput {
  return {
    journal: journal(sections),
    resource: new Map(),
    history: historyOf(sections),
    faults: [],
    leftovers: [],
    slots: new Map([['s', 2]]),
    recoveryBoundMs: 5000,
    stoppedAt: 100 * S,
    ...more,
  };
}

const kinds = (i: CheckInput): ViolationKind[] => check(i).violations.map((v) => v.kind);

const clean: Sec[] = [
  { id: 'a', name: 'x', token: 1, at: 1, to: 2 },
  { id: 'b', name: 'x', token: 2, at: 2.1, to: 3 },
  { id: 'r1', name: 'x', token: 3, at: 3.1, to: 4, mode: 'shared' },
  { id: 'r2', name: 'x', token: 4, at: 3.2, to: 4.2, mode: 'shared' },
  { id: 's1', name: 's', token: 1, at: 1, to: 3, slot: 1 },
  { id: 's2', name: 's', token: 2, at: 1.5, to: 3, slot: 2 },
  { id: 's3', name: 's', token: 3, at: 3.5, to: 4, slot: 1 },
];

test('a clean journal passes', () => {
  const v = check(input(clean, { faults: [{ kind: 'cut', start: 0, end: 0.5 * S }] }));
  assert.deepEqual(v.violations, []);
  assert.equal(v.sections, 7);
  assert.equal(v.accepted, 7);
  assert.ok(Math.abs(v.worstRecoveryMs - 500) < 1, `worst recovery ${v.worstRecoveryMs}`);
});

test('two accepted exclusive sections at once: overlap', () => {
  const j = [...clean, { id: 'c', name: 'x', token: 5, at: 1.5, to: 1.8 }];
  assert.ok(kinds(input(j)).includes('overlap'));
});

test('an overlap the resource refused is counted apart, not a violation', () => {
  const j = [
    { id: 'a', name: 'x', token: 1, at: 1, to: 3, accepted: false, outcome: 'lost' },
    { id: 'b', name: 'x', token: 2, at: 2, to: 2.5 },
  ];
  const v = check(input(j));
  assert.deepEqual(v.violations, []);
  assert.equal(v.fencedOverlaps, 1);
  assert.equal(v.refused, 1);
});

test('a section killed inside lasts until its client saw the kill, and no longer', () => {
  const j = journal([
    { id: 'a', name: 'x', token: 1, at: 1, to: 2, outcome: 'killed' },
    { id: 'b', name: 'x', token: 2, at: 3, to: 4 },
  ]).filter((e) => !(e.id === 'a' && e.ev === 'exit'));
  const base = input([], { journal: j, history: historyOf([]), faults: [{ kind: 'kill-run', start: 0, end: 2 * S }] });
  const v = check(base);
  assert.deepEqual([v.violations, v.fencedOverlaps], [[], 0]);
  // Killed after the next holder entered: an overlap.
  const late = j.map((e) => (e.id === 'a' && e.ev === 'done' ? { ...e, t: 3.5 * S } : e));
  assert.deepEqual(kinds({ ...base, journal: late }), ['overlap']);
  // With no word from its client at all, it never ended.
  assert.deepEqual(kinds({ ...base, journal: j.filter((e) => e.id !== 'a' || e.ev !== 'done') }), ['overlap']);
});

test('more than N inside an N-slot name: slots', () => {
  const j = [...clean, { id: 's4', name: 's', token: 4, at: 2, to: 2.5, slot: 2 }];
  assert.ok(kinds(input(j)).includes('slots'));
});

test('a writer beside a reader: reader-writer', () => {
  const j = [...clean, { id: 'w', name: 'x', token: 9, at: 3.5, to: 3.6 }];
  assert.ok(kinds(input(j)).includes('reader-writer'));
});

test('an accepted write with a lower token than one before: token-order', () => {
  const j = [
    { id: 'a', name: 'x', token: 5, at: 1, to: 2 },
    { id: 'b', name: 'x', token: 3, at: 2.5, to: 3 },
  ];
  assert.deepEqual(kinds(input(j)), ['token-order']);
});

test('the resource below what was accepted: resource', () => {
  assert.deepEqual(kinds(input(clean, { resource: new Map([['x', 1]]) })), ['resource']);
});

test('success reported for a hold the store recorded lost: lost-untold', () => {
  const history = [...historyOf(clean), { event: 'lost', name: 'x', token: 2 }];
  assert.deepEqual(kinds(input(clean, { history })), ['lost-untold']);
  // Told: no violation.
  const told = clean.map((s) => (s.id === 'b' ? { ...s, outcome: 'lost' } : s));
  assert.deepEqual(kinds(input(told, { history })), []);
});

test('a name not granted within the bound after a fault: recovery', () => {
  const faults = [{ kind: 'majority-down', start: 0, end: 0.5 * S }];
  const late = clean.map((s) => (s.name === 's' ? { ...s, at: s.at + 10, to: s.to + 10 } : s));
  const v = check(input(late, { faults }));
  assert.deepEqual(
    v.violations.map((x) => x.kind),
    ['recovery'],
  );
  assert.equal(v.worstRecoveryName, 's');
});

test('no violation for a name nobody waits for, nor beyond a waiter that gave up', () => {
  const faults = [{ kind: 'kill-helper', start: 0, end: 0.5 * S }];
  // Asked for only long after the fault: granted at once.
  const unasked = clean.map((s) => (s.name === 's' ? { ...s, at: s.at + 10, to: s.to + 10, ask: s.at + 10 } : s));
  assert.deepEqual(check(input(unasked, { faults })).violations, []);
  // A waiter that gave up after 2 s, the next grant 10 s later: it waited 1.5 s after the fault.
  const j = journal(clean).filter((e) => e.lock_name !== 's');
  j.push({ ev: 'ask', id: 'w', pid: 1, client: 'c-w', lock_name: 's', t: 0, wall: 0 });
  j.push({ ev: 'giveup', id: 'w', pid: 1, client: 'c-w', lock_name: 's', t: 2 * S, wall: 0 });
  const v = check(input([], { journal: j, history: historyOf(clean), faults }));
  assert.deepEqual(v.violations, []);
  assert.equal(v.worstRecoveryName, 's');
  assert.ok(Math.abs(v.worstRecoveryMs - 1500) < 1, `worst recovery ${v.worstRecoveryMs}`);
});

test('a recovery the next fault interrupts is judged after that fault', () => {
  const late = clean.map((s) => (s.name === 's' ? { ...s, at: s.at + 10, to: s.to + 10 } : s));
  const faults = [
    { kind: 'cut', start: 0, end: 0.5 * S },
    { kind: 'majority-down', start: 3 * S, end: 9 * S },
  ];
  assert.deepEqual(kinds(input(late, { faults })), []);
  assert.deepEqual(kinds(input(late, { faults: [faults[0]!, { ...faults[1]!, start: 7 * S }] })), ['recovery']);
});

test('requests and not one grant: progress', () => {
  const j = journal(clean).filter((e) => e.ev === 'ask');
  assert.deepEqual(kinds(input([], { journal: j, history: [] })), ['progress']);
});

test('a hold, waiter or process left at the end: leftover', () => {
  assert.deepEqual(kinds(input(clean, { leftovers: ['x still held: [...]'] })), ['leftover']);
});

test('a grant or release the history lacks: history-missing', () => {
  const noGrant = historyOf(clean).filter((r) => !(r.token === 2 && r.name === 'x' && r.event === 'grant'));
  assert.deepEqual(kinds(input(clean, { history: noGrant })), ['history-missing']);
  const noRelease = historyOf(clean).filter((r) => !(r.token === 1 && r.name === 'x' && r.event === 'release'));
  assert.deepEqual(kinds(input(clean, { history: noRelease })), ['history-missing']);
  // Inside a fault's window (or within the bound after it) a missing record is a gap, counted apart.
  const fault = { kind: 'full-fs', start: 0, end: 100 * S };
  const gapped = check(input(clean, { history: noGrant, faults: [fault] }));
  assert.deepEqual([gapped.violations.map((v) => v.kind), gapped.historyGaps], [[], 1]);
  // Within the bound (5 s) before a fault too: a killed writer loses what it had buffered.
  const kill = { kind: 'kill-helper', start: 6 * S, end: 6 * S };
  assert.equal(check(input(clean, { history: noGrant, faults: [kill] })).historyGaps, 1);
  // Far from every fault it is a violation.
  const later = { kind: 'kill-helper', start: 97 * S, end: 97 * S };
  assert.deepEqual(kinds(input(clean, { history: noGrant, faults: [later] })), ['history-missing']);
});
