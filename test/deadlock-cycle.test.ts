// The wait-for cycle search on its own: which waits close a cycle among
// runs' hosts, which cycle is named, and who closed it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KeyStatus, Waiter } from '../src/store/contract';
import type { Holder } from '../src/store/types';
import type { Mode } from '../src/core/mode';
import { describeCycle, findCycle, type WaitingRun } from '../src/policy/deadlock';

const holder = (run: string, mode: Mode = 'exclusive', extra: Partial<Holder> = {}): Holder => ({
  pid: 1,
  user: 'u',
  controller: 'c',
  since: '2026-01-01T00:00:00.000Z',
  run,
  mode,
  ...extra,
});
const waiter = (run: string, since: string, mode: Mode = 'exclusive', extra: Partial<Waiter> = {}): Waiter => ({
  pid: 1,
  user: 'u',
  controller: 'c',
  run,
  mode,
  since: `2026-01-01T00:00:0${since}.000Z`,
  id: `w-${run}-${since}`,
  ...extra,
});
const lock = (name: string, holders: Holder[], waiters: Waiter[] = []): KeyStatus => ({
  key: { id: `/l/${name}.lock`, name },
  held: holders.length > 0,
  mode: holders[0]?.mode ?? null,
  holders,
  waiters,
});
const me = (run: string, name: string, extra: Partial<WaitingRun> = {}): WaitingRun => ({
  run,
  keyId: `/l/${name}.lock`,
  mode: 'exclusive',
  ...extra,
});

test('two runs waiting for each other: the second wait closes the cycle', () => {
  const graph = [lock('x', [holder('A')], [waiter('B', '2')]), lock('y', [holder('B')], [waiter('A', '1')])];
  const byB = findCycle(graph, me('B', 'x', { id: 'w-B-2' }));
  assert.ok(byB);
  assert.deepEqual(
    byB.links.map((l) => [l.run, l.name, l.heldBy]),
    [
      ['B', 'x', 'A'],
      ['A', 'y', 'B'],
    ],
  );
  assert.equal(byB.closing, true, 'the newest wait closes it');
  const byA = findCycle(graph, me('A', 'y', { id: 'w-A-1' }));
  assert.ok(byA);
  assert.equal(byA.closing, false, 'the older wait did not');
});

test('no cycle: a chain, shared beside shared, a lost holder, a holder without a run', () => {
  assert.equal(findCycle([lock('x', [holder('A')]), lock('y', [holder('C')], [waiter('A', '1')])], me('B', 'x')), null);
  const shared = [lock('x', [holder('A', 'shared')]), lock('y', [holder('B')], [waiter('A', '1', 'shared')])];
  assert.equal(findCycle(shared, { ...me('B', 'x'), mode: 'shared' }), null);
  const lost = [lock('x', [holder('A', 'exclusive', { lost: true })]), lock('y', [holder('B')], [waiter('A', '1')])];
  assert.equal(findCycle(lost, me('B', 'x')), null);
  const anonymous = [lock('x', [holder('')]), lock('y', [holder('B')], [waiter('A', '1')])];
  assert.equal(findCycle(anonymous, me('B', 'x')), null);
  assert.equal(findCycle([lock('y', [holder('B')], [waiter('A', '1')])], me('B', 'x')), null, 'my lock unknown');
});

test('the shortest cycle is the one named', () => {
  // C waits for x (held by A); A waits for y (held by B) and for z (held by C); B waits for w (held by D), D for z.
  const graph = [
    lock('x', [holder('A')], [waiter('C', '5')]),
    lock('y', [holder('B')], [waiter('A', '1')]),
    lock('z', [holder('C')], [waiter('A', '2'), waiter('D', '3')]),
    lock('w', [holder('D')], [waiter('B', '4')]),
  ];
  const c = findCycle(graph, me('C', 'x'));
  assert.ok(c);
  assert.deepEqual(
    c.links.map((l) => `${l.run}>${l.name}>${l.heldBy}`),
    ['C>x>A', 'A>z>C'],
  );
});

test("a run's hosts are parties of their own; one host waiting for itself is no cycle", () => {
  // Host h1 of run R holds x, host h2 of R waits for it: h2 waits for h1, not for itself.
  const twoHosts = [
    lock('x', [holder('R', 'exclusive', { host: 'h1' })], [waiter('R', '1', 'exclusive', { host: 'h2' })]),
  ];
  assert.equal(findCycle(twoHosts, me('R', 'x', { host: 'h2' })), null);
  const crossed = [
    lock('x', [holder('R', 'exclusive', { host: 'h1' })], [waiter('R', '2', 'exclusive', { host: 'h2' })]),
    lock('y', [holder('R', 'exclusive', { host: 'h2' })], [waiter('R', '1', 'exclusive', { host: 'h1' })]),
  ];
  const c = findCycle(crossed, me('R', 'x', { host: 'h2', id: 'w-R-2' }));
  assert.ok(c, 'two hosts of one run can deadlock each other');
  assert.deepEqual(
    c.links.map((l) => [l.host, l.name, l.heldByHost]),
    [
      ['h2', 'x', 'h1'],
      ['h1', 'y', 'h2'],
    ],
  );
});

test('a cycle reads as who waits for what, held by whom', () => {
  assert.equal(
    describeCycle([
      { run: 'A', task: 'Lock web3', host: 'localhost', name: 'web3', heldBy: 'B', heldByHost: 'localhost' },
      { run: 'B', name: 'web1', heldBy: 'A' },
    ]),
    "deadlock: run A (task 'Lock web3', host localhost) waits for 'web3' held by run B (host localhost); " +
      "run B waits for 'web1' held by run A",
  );
});
