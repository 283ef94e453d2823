// Timeline bars from history records alone: holds matched to their end by
// token, waits to their outcome by wait id, who each wait waited for, and
// what is left open when the history ends.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HistoryRecord } from '../src/store/types';
import { bars, buildTimeline } from '../src/cli/commands/timeline';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const rec = (
  s: number,
  event: HistoryRecord['event'],
  run: string,
  extra: Partial<HistoryRecord> = {},
): HistoryRecord => ({
  t: at(s),
  event,
  name: 'x',
  path: '/l/x.lock',
  mode: 'exclusive',
  run,
  ...extra,
});
const view = (b: ReturnType<typeof bars>[number]) => [
  b.kind,
  b.run,
  (b.start - T0) / 1000,
  (b.end - T0) / 1000,
  b.open,
];

test('a hold runs from its grant to the release with its token; a wait from wait to grant', () => {
  const got = bars(
    [
      rec(0, 'grant', 'A', { token: 1 }),
      rec(1, 'wait', 'B', { wait: 'w1' }),
      rec(5, 'release', 'A', { token: 1 }),
      rec(5, 'grant', 'B', { token: 2, wait: 'w1', waited: 4 }),
      rec(7, 'release', 'B', { token: 2 }),
    ],
    T0 + 10_000,
  );
  assert.deepEqual(got.map(view), [
    ['hold', 'A', 0, 5, false],
    ['wait', 'B', 1, 5, false],
    ['hold', 'B', 5, 7, false],
  ]);
  const wait = got.find((b) => b.kind === 'wait')!;
  assert.equal(wait.outcome, 'grant');
  assert.deepEqual(wait.for, ['A'], 'B waited for A');
});

test('a wait ends by timeout, cancel or deadlock; one never ended stays open to the edge', () => {
  const got = bars(
    [
      rec(0, 'grant', 'A', { token: 1 }),
      rec(1, 'wait', 'B', { wait: 'b' }),
      rec(1, 'wait', 'C', { wait: 'c' }),
      rec(1, 'wait', 'D', { wait: 'd' }),
      rec(1, 'wait', 'E', { wait: 'e' }),
      rec(2, 'timeout', 'B', { wait: 'b' }),
      rec(3, 'cancel', 'C', { wait: 'c' }),
      rec(4, 'deadlock', 'D', { wait: 'd' }),
    ],
    T0 + 9000,
  );
  const waits = got.filter((b) => b.kind === 'wait');
  assert.deepEqual(
    waits.map((b) => [b.run, b.outcome, (b.end - T0) / 1000, b.open]),
    [
      ['B', 'timeout', 2, false],
      ['C', 'cancel', 3, false],
      ['D', 'deadlock', 4, false],
      ['E', undefined, 9, true],
    ],
  );
  assert.deepEqual(got.find((b) => b.kind === 'hold')!.open, true, 'a hold never released is open');
});

test('shared holds overlap; an exclusive grant ends the holds that left no release', () => {
  const got = bars(
    [
      rec(0, 'grant', 'A', { token: 1, mode: 'shared' }),
      rec(1, 'grant', 'B', { token: 2, mode: 'shared' }),
      rec(2, 'release', 'B', { token: 2, mode: 'shared' }),
      rec(6, 'grant', 'C', { token: 3 }),
      rec(8, 'lost', 'C', { token: 3 }),
    ],
    T0 + 10_000,
  );
  assert.deepEqual(got.map(view), [
    ['hold', 'A', 0, 6, true],
    ['hold', 'B', 1, 2, false],
    ['hold', 'C', 6, 8, false],
  ]);
});

test('a wait known only from its grant is drawn from `waited`, a short one not at all', () => {
  const got = bars(
    [
      rec(10, 'grant', 'A', { token: 1, waited: 4 }),
      rec(11, 'release', 'A', { token: 1 }),
      rec(12, 'grant', 'B', { token: 2, waited: 0.001 }),
    ],
    T0 + 20_000,
  );
  assert.deepEqual(got.map(view), [
    ['hold', 'A', 10, 11, false],
    ['wait', 'A', 6, 10, false],
    ['hold', 'B', 12, 20, true],
  ]);
});

test('records of other locks and runs without a name are told apart', () => {
  const got = bars(
    [
      rec(0, 'grant', 'A', { token: 1 }),
      rec(0, 'grant', 'A', { token: 1, name: 'y', path: '/l/y.lock' }),
      rec(1, 'release', 'A', { token: 1, name: 'y', path: '/l/y.lock' }),
      { t: at(2), event: 'grant', path: '/l/z.lock', token: 5, pid: 77 },
    ],
    T0 + 5000,
  );
  assert.deepEqual(
    got.map((b) => [b.lock, b.run, b.open]),
    [
      ['x', 'A', true],
      ['y', 'A', false],
      ['/l/z.lock', 'pid 77', true],
    ],
  );
});

test('terminal rows: one per lock, each cell the run holding most of it, runs lettered by first appearance', () => {
  const tl = buildTimeline(
    [
      rec(0, 'grant', 'B', { token: 1 }),
      rec(5, 'release', 'B', { token: 1 }),
      rec(5, 'grant', 'A', { token: 2 }),
      rec(10, 'release', 'A', { token: 2 }),
      rec(1, 'grant', 'A', { token: 1, name: 'y', path: '/l/y.lock' }),
      rec(3.5, 'release', 'A', { token: 1, name: 'y', path: '/l/y.lock' }),
    ],
    null,
    T0 + 60_000,
  );
  assert.deepEqual(tl.runs, ['B', 'A']);
  assert.deepEqual([tl.t0, tl.t1], [T0, T0 + 10_000], 'the window ends at the last record when nothing is open');
  const [x, y, , , legend] = tl.terminal(10).split('\n');
  // B (glyph A) holds x for the first half, A (glyph B) the second; A holds y from 1 s to 3.5 s.
  assert.equal(x, '   x │AAAAABBBBB│');
  assert.equal(y, '   y │·BBB······│');
  assert.equal(legend, 'A = B   B = A');
});
